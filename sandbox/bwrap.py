"""bubblewrap backend: for machines without a Docker engine.

Each run: a fresh user, pid, net, ipc, uts and cgroup namespace (`--unshare-all`), the host's /usr
read-only, a size-limited tmpfs as the only writable place, a clean environment, the system
/usr/bin/python3, rlimits set by the runner, and a wall-clock limit that kills the process group.
As root we first drop to an unprivileged uid of our own: RLIMIT_NPROC is not enforced for uid 0, and
a private uid per concurrent slot keeps one run's fork bomb from eating another run's process budget.
/dev is read-only but for a size-limited tmpfs /dev/shm.

`run_many` goes through warm sessions (sandbox/session.py): one such sandbox, started once, runs programs one
after another in forked children of a driver that restores a pristine sandbox between them; a program whose
session is lost is run again alone. Each session holds one uid slot for its life.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.core.errors import UsageError
from harness.sandbox.base import (
    RUNNER_SOURCE,
    Job,
    Limits,
    OutputBuffer,
    Sandbox,
    Verdict,
    classify,
    proc_uid_pids,
    rlimits,
    runner_spec,
    supervise,
)
from harness.sandbox.session import SESSION_SOURCE, Session, SessionPool, answer_verdict, job_spec

PYTHON = "/usr/bin/python3"
WORKDIR = "/tmp/work"
UID_BASE = 1_500_000  # far above any real account; processes here are only ever ours


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None and Path(PYTHON).exists()


class BwrapSandbox(Sandbox):
    name = "bwrap"

    def __init__(self, slots: int = 16, sessions: int | None = None):
        if not bwrap_available():
            raise UsageError("bwrap backend needs bubblewrap and /usr/bin/python3 (apt-get install -y bubblewrap python3)")
        self._bwrap = shutil.which("bwrap")
        self._root = os.geteuid() == 0
        base = UID_BASE + (os.getpid() % 40_000) * slots
        self._free = [base + i for i in range(slots)] if self._root else [os.geteuid()]
        self._cond = threading.Condition()
        # warm sessions kept idle: one per worker; as root each holds a uid slot, and single runs need some too
        self.workers = max(1, sessions or self.workers)
        if self._root:
            self.workers = min(self.workers, slots // 2 or 1)
        self._sessions = SessionPool(self._start_session, self.workers)

    def _acquire_uid(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop(0)

    def _release_uid(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid)
            self._cond.notify()

    def _argv(self, limits: Limits, session: bool = False) -> list[str]:
        argv = [self._bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR,
                "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
                "--ro-bind", "/usr", "/usr"]
        for top in ("bin", "lib", "lib64", "lib32", "sbin"):
            host = Path("/") / top
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), f"/{top}"]
        size = str(limits.tmp_mb * 1024 * 1024)
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                 "--size", size, "--tmpfs", "/tmp", "--chdir", "/tmp", "--hostname", "sandbox", "--remount-ro", "/"]
        if session:  # without -S: the programs it forks must see the interpreter `python3 -I` would give them
            return argv + ["--", PYTHON, "-I", "-c", SESSION_SOURCE, WORKDIR]
        return argv + ["--", PYTHON, "-I", "-S", "-c", RUNNER_SOURCE, WORKDIR]

    def _nproc(self, uid: int, limits: Limits) -> int:
        # Not root: RLIMIT_NPROC counts all of the user's processes, so leave room for those already running.
        return limits.pids + (0 if self._root else len(proc_uid_pids(uid)))

    def _execute(self, files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits,
                 nonce: str | None) -> Verdict:
        uid = self._acquire_uid()
        try:
            return self._execute_as(uid, files, command, limits, nonce)
        finally:
            self._reap_uid(uid)
            self._release_uid(uid)

    @staticmethod
    def _dropper(uid: int):
        def drop_privileges() -> None:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
        return drop_privileges

    def _execute_as(self, uid: int, files, command, limits: Limits, nonce: str | None) -> Verdict:
        spec = runner_spec(files, command, limits, nproc=self._nproc(uid, limits))
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        start = time.monotonic()
        proc = subprocess.Popen(self._argv(limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}, cwd="/",
                                start_new_session=True, preexec_fn=self._dropper(uid))
        # bwrap's inner init has PR_SET_PDEATHSIG: killing our session takes the pid namespace down with it.
        done = supervise(proc, spec, out, err, timeout_s=limits.timeout_s, start=start,
                         stop=lambda: self._kill_group(proc.pid))
        status_, code, detail = classify(returncode=done.returncode, timed_out=done.timed_out, oom=False, stderr=err,
                                         stdout=out, nonce=nonce, signal_exit_codes=True)
        return Verdict(status_, code, out.text(), err.text(), done.wall_s, done.cpu_s, out.truncated, err.truncated,
                       detail=detail)

    # -- warm sessions ------------------------------------------------------------------------------------------
    def _start_session(self, limits: Limits) -> Session:
        # not root: every run has our own uid, and the one slot serialises one-shot runs only
        uid = self._acquire_uid() if self._root else os.geteuid()
        try:
            proc = subprocess.Popen(self._argv(limits, session=True), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}, cwd="/",
                                    start_new_session=True, preexec_fn=self._dropper(uid))
        except BaseException:
            if self._root:
                self._release_uid(uid)
            raise

        def on_end(pristine: bool) -> None:
            if self._root:
                self._reap_uid(uid)
                self._release_uid(uid)

        session = Session(proc, lambda: self._kill_group(proc.pid), on_end)
        session.uid = uid
        return session

    def _execute_warm(self, job: Job) -> Verdict:
        limits = job.limits
        key = (limits.tmp_mb,)
        session = self._sessions.acquire(key, limits)
        if session is None:
            self._sessions.count("cold")
            return self._execute(job.files, list(job.command), limits, job.nonce)
        # the driver is one more process of the slot's uid than a one-shot run has
        spec = job_spec(job.files, job.command, limits, rlimits(limits, self._nproc(session.uid, limits) + 1))
        answer = session.run(spec, limits.timeout_s)
        self._sessions.release(key, session)
        if answer is None:  # the session was lost with this program in it: run it again, alone
            self._sessions.count("rerun")
            return self._execute(job.files, list(job.command), limits, job.nonce)
        self._sessions.count("warm")
        return answer_verdict(answer, limits, job.nonce)

    @property
    def session_counts(self) -> dict[str, int]:
        """How run_many's jobs went: warm (from a session), rerun (session lost: run again alone), cold."""
        return dict(self._sessions.counts)

    def close(self) -> None:
        self._sessions.close()

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap_uid(self, uid: int) -> None:
        """Belt and braces: nothing may outlive a run. The pid namespace dies with its init, but check."""
        if not self._root:
            return
        for _ in range(50):
            left = proc_uid_pids(uid)
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
