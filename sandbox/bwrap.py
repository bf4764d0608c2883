"""bubblewrap backend: for machines without a Docker engine.

Each run: a fresh user, pid, net, ipc, uts and cgroup namespace (`--unshare-all`), the host's /usr
read-only, a size-limited tmpfs as the only writable place, a clean environment, the system
/usr/bin/python3, rlimits set by the runner, and a wall-clock limit that kills the process group.
As root we first drop to an unprivileged uid of our own: RLIMIT_NPROC is not enforced for uid 0, and
a private uid per concurrent slot keeps one run's fork bomb from eating another run's process budget.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from harness.errors import UsageError
from sandbox.base import (RUNNER_SOURCE, Limits, OutputBuffer, Sandbox, Verdict, classify, proc_uid_pids, runner_spec,
                          supervise)

PYTHON = "/usr/bin/python3"
WORKDIR = "/tmp/work"
UID_BASE = 1_500_000  # far above any real account; processes here are only ever ours


def bwrap_available() -> bool:
    return shutil.which("bwrap") is not None and Path(PYTHON).exists()


class BwrapSandbox(Sandbox):
    name = "bwrap"

    def __init__(self, slots: int = 16):
        if not bwrap_available():
            raise UsageError("bwrap backend needs bubblewrap and /usr/bin/python3 (apt-get install -y bubblewrap python3)")
        self._bwrap = shutil.which("bwrap")
        self._root = os.geteuid() == 0
        base = UID_BASE + (os.getpid() % 40_000) * slots
        self._free = [base + i for i in range(slots)] if self._root else [os.geteuid()]
        self._cond = threading.Condition()

    def _acquire_uid(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop(0)

    def _release_uid(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid)
            self._cond.notify()

    def _argv(self, limits: Limits) -> list[str]:
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
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
                 "--chdir", "/tmp", "--hostname", "sandbox", "--remount-ro", "/"]
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

    def _execute_as(self, uid: int, files, command, limits: Limits, nonce: str | None) -> Verdict:
        def drop_privileges() -> None:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        spec = runner_spec(files, command, limits, nproc=self._nproc(uid, limits))
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        start = time.monotonic()
        proc = subprocess.Popen(self._argv(limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}, cwd="/",
                                start_new_session=True, preexec_fn=drop_privileges)
        # bwrap's inner init has PR_SET_PDEATHSIG: killing our session takes the pid namespace down with it.
        done = supervise(proc, spec, out, err, timeout_s=limits.timeout_s, start=start,
                         stop=lambda: self._kill_group(proc.pid))
        status_, code, detail = classify(returncode=done.returncode, timed_out=done.timed_out, oom=False, stderr=err,
                                         stdout=out, nonce=nonce, signal_exit_codes=True)
        return Verdict(status_, code, out.text(), err.text(), done.wall_s, done.cpu_s, out.truncated, err.truncated,
                       detail=detail)

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
