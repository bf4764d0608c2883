"""Docker backend: a pool of warm, locked-down containers, one run at a time each, through `docker exec`.

Every container: no network, memory = memory + swap limit, pids and CPU limits, read-only root, a
size-limited tmpfs /tmp (the only writable place), an unprivileged user, no capabilities,
no-new-privileges, no logs, and labels naming the run and the owning process. A container is recycled
(removed, a fresh one started on demand) after a timeout, an OOM kill, a sandbox error, or when a run
left a process behind; containers are removed on close, at exit, on Ctrl-C, and at the next start when
a crashed harness left them. Killing `docker exec` does not stop what it started, so timeouts remove
the container itself.

`run_many` goes through warm sessions (sandbox/session.py): one long `docker exec` of the session driver per
pooled container runs programs one after another in forked children, restoring a pristine container between them;
a program whose session is lost is run again alone, and the container goes.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.core.errors import UsageError
from harness.sandbox.base import RUNNER_SOURCE, Job, Limits, OutputBuffer, Sandbox, Verdict, classify, rlimits, runner_spec, supervise
from harness.sandbox.image import IMAGE, SANDBOX_UID, ensure_image
from harness.sandbox.session import SESSION_SOURCE, Session, SessionPool, SessionUnavailable, answer_verdict, job_spec

LABEL = "harness.sandbox"
WORKDIR = "/tmp/work"
INIT = ("import os, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: os._exit(0))\n"
        "while True:\n"
        "    try:\n        os.wait()\n"
        "    except ChildProcessError:\n        time.sleep(0.05)\n")  # reap orphans soon: zombies hold pids


def docker_available(timeout: float = 10) -> bool:
    """True when a Docker daemon answers."""
    try:
        return subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _docker(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def remove_stale_containers() -> list[str]:
    """Remove sandbox containers whose owning harness process on this host is gone (a crash left them)."""
    out = _docker("ps", "-a", "--filter", f"label={LABEL}", "--format",
                  '{{.ID}} {{.Label "' + LABEL + '.owner"}}').stdout
    stale = []
    host = socket.gethostname()
    for line in out.splitlines():
        cid, _, owner = line.partition(" ")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host == host and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.append(cid)
    if stale:
        _docker("rm", "-f", *stale)
    return stale


class _Cgroup:
    """The container's cgroup on this host, read directly (cheap) where the layout is known; else None."""

    def __init__(self, cid: str):
        roots = [Path("/sys/fs/cgroup") / sub for sub in ("docker", "system.slice")]
        self.v2 = next((p for p in (roots[0] / cid, roots[1] / f"docker-{cid}.scope") if (p / "cgroup.procs").exists()
                        and (p / "memory.events").exists()), None)
        v1 = Path("/sys/fs/cgroup")
        self.v1 = {c: v1 / c / "docker" / cid for c in ("pids", "memory", "cpuacct")}
        if not all(p.exists() for p in self.v1.values()):
            self.v1 = None

    @property
    def known(self) -> bool:
        return bool(self.v2 or self.v1)

    def procs(self) -> int | None:
        path = (self.v2 / "cgroup.procs") if self.v2 else (self.v1["pids"] / "cgroup.procs") if self.v1 else None
        try:
            return len(path.read_text().split()) if path else None
        except OSError:
            return None

    def cpu_s(self) -> float | None:
        try:
            if self.v2:
                stat = dict(line.split() for line in (self.v2 / "cpu.stat").read_text().splitlines())
                return int(stat["usage_usec"]) / 1e6
            if self.v1:
                return int((self.v1["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, KeyError, ValueError):
            return None
        return None

    def oom_kills(self) -> int | None:
        try:
            if self.v2:
                text = (self.v2 / "memory.events").read_text()
            elif self.v1:
                text = (self.v1["memory"] / "memory.oom_control").read_text()
            else:
                return None
            return int(dict(line.split() for line in text.splitlines()).get("oom_kill", 0))
        except (OSError, ValueError):
            return None


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, image: str = IMAGE, pool_size: int | None = None, run_label: str | None = None,
                 build: bool = True):
        if not docker_available():
            raise UsageError("docker backend: no Docker daemon answers (start dockerd, or use --backend bwrap)")
        self.image = image
        self.pool_size = pool_size or self.workers  # warm containers (and sessions), one per core by default
        self.workers = self.pool_size
        self.run_label = run_label or uuid.uuid4().hex[:12]
        remove_stale_containers()
        if build:
            ensure_image(image)  # Dockerfile where a registry answers, else docker import of the host's Python
        self._idle: dict[tuple, list[str]] = {}
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._sessions = SessionPool(self._start_session, self.pool_size)
        atexit.register(self.close)

    # -- containers -------------------------------------------------------------------------------
    def _start(self, limits: Limits) -> str:
        mem = f"{limits.memory_mb}m"
        argv = ["run", "-d", "--network", "none", "--memory", mem, "--memory-swap", mem,
                "--pids-limit", str(limits.pids + 2), "--cpus", str(limits.cpus), "--read-only",  # pids: + init, + driver
                "--tmpfs", f"/tmp:rw,nosuid,nodev,noexec,size={limits.tmp_mb}m,mode=1777",
                "--user", f"{SANDBOX_UID}:{SANDBOX_UID}", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--log-driver", "none", "--ulimit", "core=0",
                "--hostname", "sandbox", "--label", f"{LABEL}=1", "--label", f"{LABEL}.owner={owner_tag()}",
                "--label", f"harness.run={self.run_label}", self.image, "python3", "-I", "-S", "-c", INIT]
        result = _docker(*argv)
        if result.returncode != 0:
            raise RuntimeError(f"docker run failed: {result.stderr.strip()}")
        cid = result.stdout.strip()
        with self._lock:
            self._live.add(cid)
        return cid

    def _acquire(self, key: tuple, limits: Limits) -> str:
        with self._lock:
            if self._closed:
                raise RuntimeError("sandbox is closed")
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return self._start(limits)

    def _release(self, key: tuple, cid: str, healthy: bool) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if healthy and not self._closed and len(idle) < self.pool_size:
                idle.append(cid)
                return
        self._remove(cid)

    def _remove(self, cid: str) -> None:
        _docker("rm", "-f", cid, timeout=120)
        with self._lock:
            self._live.discard(cid)

    @property
    def session_counts(self) -> dict[str, int]:
        """How run_many's jobs went: warm (from a session), rerun (session lost: run again alone), cold."""
        return dict(self._sessions.counts)

    def close(self) -> None:
        self._sessions.close()
        with self._lock:
            self._closed = True
            live = list(self._live)
            self._live.clear()
            self._idle.clear()
        if live:
            try:
                _docker("rm", "-f", *live, timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def containers(self) -> list[str]:
        with self._lock:
            return sorted(self._live)

    # -- warm sessions ----------------------------------------------------------------------------------------
    @staticmethod
    def _key(limits: Limits) -> tuple:
        return (limits.memory_mb, limits.pids, limits.cpus, limits.tmp_mb)

    def _start_session(self, limits: Limits) -> Session:
        key = self._key(limits)
        cid = self._acquire(key, limits)
        cgroup = _Cgroup(cid)
        if cgroup.oom_kills() is None:  # without it an OOM kill could not be told apart: no sessions here
            self._release(key, cid, True)
            raise SessionUnavailable("docker: the container's cgroup memory events cannot be read")
        argv = ["docker", "exec", "-i", "-u", f"{SANDBOX_UID}:{SANDBOX_UID}", "-w", "/tmp", cid,
                "python3", "-I", "-c", SESSION_SOURCE, WORKDIR]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            self._remove(cid)
            raise

        def on_end(pristine: bool) -> None:  # not pristine: the session already removed the container
            if pristine:
                self._release(key, cid, self._only_init_left(cgroup))

        session = Session(proc, lambda: self._remove(cid), on_end)
        session.cgroup = cgroup
        return session

    def _execute_warm(self, job: Job) -> Verdict:
        limits = job.limits
        key = self._key(limits)
        session = self._sessions.acquire(key, limits)
        if session is None:
            self._sessions.count("cold")
            return self._execute(job.files, list(job.command), limits, job.nonce)
        oom0 = session.cgroup.oom_kills()
        answer = session.run(job_spec(job.files, job.command, limits, rlimits(limits, None)), limits.timeout_s)
        oom1 = session.cgroup.oom_kills()
        self._sessions.release(key, session)
        if answer is None or oom0 is None or oom1 is None:
            # lost with this program in it, or no OOM accounting to tell an OOM kill: run it again, alone
            self._sessions.count("rerun")
            return self._execute(job.files, list(job.command), limits, job.nonce)
        self._sessions.count("warm")
        return answer_verdict(answer, limits, job.nonce, oom=oom1 > oom0)

    # -- one run ----------------------------------------------------------------------------------
    def _execute(self, files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits,
                 nonce: str | None) -> Verdict:
        key = self._key(limits)
        try:
            cid = self._acquire(key, limits)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            return Verdict("error", None, "", str(exc), 0.0, detail="could not start a sandbox container")
        healthy = False
        try:
            verdict, healthy = self._exec(cid, files, command, limits, nonce)
            return verdict
        finally:  # also on KeyboardInterrupt: an unfinished container is removed, never reused
            self._release(key, cid, healthy)

    def _exec(self, cid: str, files, command, limits: Limits, nonce: str | None) -> tuple[Verdict, bool]:
        cgroup = _Cgroup(cid)
        cpu0, oom0 = cgroup.cpu_s(), cgroup.oom_kills()
        # Pids inside the container are limited by the cgroup; RLIMIT_NPROC would count the host uid's processes.
        spec = runner_spec(files, command, limits, nproc=None)
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        argv = ["docker", "exec", "-i", "-u", f"{SANDBOX_UID}:{SANDBOX_UID}", "-w", "/tmp", cid,
                "python3", "-I", "-S", "-c", RUNNER_SOURCE, WORKDIR]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # on timeout the container goes: that stops everything the run started, and the exec client ends by itself
        done = supervise(proc, spec, out, err, timeout_s=limits.timeout_s, start=start,
                         stop=lambda: self._remove(cid), grace_s=30)
        timed_out, wall = done.timed_out, done.wall_s
        cpu1, oom1 = cgroup.cpu_s(), cgroup.oom_kills()
        cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        oom = oom0 is not None and oom1 is not None and oom1 > oom0
        rc = done.returncode
        if not timed_out and rc in (125, 126, 127) and ("Error response from daemon" in err.text()
                                                         or "OCI runtime" in err.text()):
            return Verdict("error", rc, out.text(), err.text(), wall, cpu, detail="docker exec failed"), False
        status, code, detail = classify(returncode=rc, timed_out=timed_out, oom=oom, stderr=err, stdout=out,
                                        nonce=nonce, signal_exit_codes=True)
        verdict = Verdict(status, code, out.text(), err.text(), wall, cpu, out.truncated, err.truncated, detail=detail)
        healthy = not timed_out and status not in ("oom", "killed", "error") and self._only_init_left(cgroup)
        return verdict, healthy

    @staticmethod
    def _only_init_left(cgroup: _Cgroup) -> bool:
        """A run that left a process behind poisons the container for the next one: then it is recycled."""
        if not cgroup.known:
            return False
        for _ in range(20):
            if cgroup.procs() == 1:
                return True
            time.sleep(0.005)
        return False
