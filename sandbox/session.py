"""Warm sessions: one sandbox (a bwrap process, or a `docker exec` into a pooled container) running the session
driver (sandbox/session_runner.py), which executes many programs one after another, each in a forked child.

A session is only an accelerator. Whenever it cannot give a trustworthy verdict (the driver died or was stopped by
the program, a verdict is late, the driver could not restore a pristine sandbox) the session is thrown away, with
the sandbox and everything in it, and the program is run again the slow way: alone, in a sandbox of its own.
"""

from __future__ import annotations

import binascii
import json
import queue
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.sandbox.base import RUNNER_SETUP_FAILED, Limits, OutputBuffer, Verdict, classify, pump

SESSION_SOURCE = Path(__file__).with_name("session_runner.py").read_text()
# How late a verdict may be beyond the program's own wall-clock limit before the host gives up on the session:
# the driver enforces the limit itself, this only catches a driver that was stopped or is stuck.
GRACE_S = 5.0
STARTUP_S = 30.0
MAX_JOBS_PER_SESSION = 500  # start afresh now and then: nothing accumulates, however small


class SessionUnavailable(RuntimeError):
    """The sandbox could not start a usable session (the caller runs programs one per sandbox instead)."""


class Session:
    """One running driver. `run` sends a job and returns the driver's answer, or None when the session is lost."""

    def __init__(self, proc: subprocess.Popen, destroy: Callable[[], None], on_end: Callable[[bool], None]):
        self.proc = proc
        self._destroy = destroy  # kills the whole sandbox, whatever runs in it
        self._on_end = on_end  # called once with whether the sandbox is still pristine
        self._lines: queue.Queue = queue.Queue()
        self.stderr = OutputBuffer(16 * 1024)
        self.jobs = 0
        self.healthy = True
        self.retire = False
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()
        self._err_reader = pump(proc.stderr, self.stderr)
        ready = self._next(STARTUP_S)
        if not ready or not ready.get("ready") or not ready.get("protected"):
            self.kill()
            raise SessionUnavailable(f"session driver did not start: {self.stderr.text().strip()[-500:]}")

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _next(self, timeout: float) -> dict | None:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def run(self, job: dict, timeout_s: float) -> dict | None:
        """Send one job; its answer, or None (the session is then dead and its sandbox destroyed)."""
        self.jobs += 1
        job = dict(job, id=self.jobs)
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self.kill()
            return None
        answer = self._next(timeout_s + GRACE_S)
        if answer is None or answer.get("id") != self.jobs:
            self.kill()
            return None
        if not answer.get("clean") or self.jobs >= MAX_JOBS_PER_SESSION:
            self.retire = True  # the answer stands; the pool closes the session on release
        return answer

    def kill(self) -> None:
        self.healthy = False
        self._end(pristine=False)

    def close(self) -> None:
        """End the driver by EOF on its stdin; it cleans up and exits. Kill it if it does not."""
        if self._ended:
            return
        self.healthy = False
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        self._end(pristine=rc == 0)

    def _end(self, pristine: bool) -> None:
        if self._ended:
            return
        self._ended = True
        if not pristine:
            self._destroy()
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._err_reader.join(1)
        self._on_end(pristine)


def decode_output(parts: list, budget: int) -> OutputBuffer:
    """The driver's head/tail/total of a stream as an OutputBuffer (the driver cut it the same way)."""
    buf = OutputBuffer(budget)
    head, tail, total = parts
    buf.head, buf.tail, buf.total = bytearray(binascii.a2b_base64(head)), bytearray(binascii.a2b_base64(tail)), total
    return buf


def answer_verdict(answer: dict, limits: Limits, nonce: str | None, oom: bool = False) -> Verdict:
    """The driver's answer as the Verdict `run` would give for the same program."""
    if "setup_error" in answer:  # as the one-shot runner reports it: exit 121 and its message
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        err.feed(f"harness-sandbox-runner: {answer['setup_error']}\n".encode())
        rc, timed_out, wall, cpu = RUNNER_SETUP_FAILED, False, 0.0, None
    else:
        out = decode_output(answer["stdout"], limits.output_bytes)
        err = decode_output(answer["stderr"], limits.output_bytes)
        rc, timed_out, wall, cpu = answer["rc"], answer["timed_out"], answer["wall"], answer["cpu"]
    status, code, detail = classify(returncode=rc, timed_out=timed_out, oom=oom, stderr=err, stdout=out, nonce=nonce,
                                    signal_exit_codes=True)
    return Verdict(status, code, out.text(), err.text(), wall, cpu, out.truncated, err.truncated, detail=detail)


def job_spec(files, command, limits: Limits, rlimits: dict) -> dict:
    encoded = {}
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else bytes(content)
        encoded[name] = binascii.b2a_base64(data, newline=False).decode()
    return {"files": encoded, "command": list(command), "rlimits": rlimits, "timeout": limits.timeout_s,
            "output_bytes": limits.output_bytes}


class SessionPool:
    """Idle sessions by key (the sandbox-level limits they were started with), at most `size` kept warm in all.

    Sessions are started on one long-lived thread: bwrap's --die-with-parent is tied to the thread that started
    it, and a warm session outlives the worker thread that asked for it."""

    def __init__(self, start: Callable[[Limits], Session], size: int):
        self._start = start
        self.size = size
        self._idle: dict[Hashable, list[Session]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-session-start")
        self.broken = False  # set when sessions cannot start here at all: everything goes the slow way
        self._failures = 0  # consecutive failed starts
        # how run_many's jobs went: "warm" (verdict from a session), "rerun" (session lost, run again alone),
        # "cold" (no session to be had, run alone)
        self.counts: Counter = Counter()

    def count(self, path: str) -> None:
        with self._lock:
            self.counts[path] += 1

    def acquire(self, key: Hashable, limits: Limits) -> Session | None:
        with self._lock:
            if self._closed or self.broken:
                return None
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        try:
            session = self._spawner.submit(self._start, limits).result()
        except (OSError, RuntimeError, subprocess.SubprocessError):  # SessionUnavailable included
            with self._lock:
                self._failures += 1
                self.broken = self._failures >= 3  # not one bad start: sessions do not work here
            return None
        with self._lock:
            self._failures = 0
        return session

    def release(self, key: Hashable, session: Session) -> None:
        if not session.healthy:
            return
        if session.retire:
            session.close()
            return
        with self._lock:
            # at most `size` idle in all: an idle bwrap session holds a uid slot that one-shot runs may be waiting for
            if not self._closed and sum(map(len, self._idle.values())) < self.size:
                self._idle.setdefault(key, []).append(session)
                return
        session.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for s in sessions:
            s.close()
        self._spawner.shutdown(wait=False)
