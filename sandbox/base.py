"""The one sandbox interface: run(files, command, limits) -> Verdict, shared by every backend."""

from __future__ import annotations

import abc
import json
import math
import operator
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Literal

from harness.core.errors import UsageError

Status = Literal["passed", "failed", "timeout", "oom", "killed", "error"]

# The in-sandbox runner exits with this code when it could not set up the run (not the program's fault).
RUNNER_SETUP_FAILED = 121
RUNNER_SOURCE = (Path(__file__).with_name("runner.py")).read_text()


class LimitError(UsageError):
    """A `Limits` field out of its bounds. A UsageError (the CLI prints one line, exit 2); `field`, `value`
    and `allowed` let a caller name its own option (`--memory-mb`) instead of the field."""

    def __init__(self, name: str, value: object, allowed: str):
        self.field, self.value, self.allowed = name, value, allowed
        super().__init__(f"sandbox limit {name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class Bound:
    """The allowed values of one `Limits` field: low..high inclusive (low excluded where `low_open`)."""

    low: float
    high: float
    unit: str
    integer: bool
    low_open: bool = False

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else str(x)

        kind = "an integer" if self.integer else "a number"
        if self.low_open:
            return f"{kind} greater than {num(self.low)} and at most {num(self.high)} ({self.unit})"
        return f"{kind} from {num(self.low)} to {num(self.high)} ({self.unit})"


# Why these bounds (each one is also where a backend stops meaning what the field says):
#   timeout_s     any positive wall-clock time up to an hour: no scored program needs more, and 0, negative,
#                 NaN or inf would make supervise() never wait or wait forever.
#   memory_mb     16 MiB (python3 starts under RLIMIT_AS from 16 MiB; at 8 it cannot map libm under bwrap
#                 and a docker container that small never answers) to 64 GiB. 0 kills the interpreter
#                 with SIGSEGV before it runs a line; negative wraps RLIMIT_AS to "unlimited".
#   pids          1 to 4096 processes and threads (RLIMIT_NPROC, docker --pids-limit): 0 or negative
#                 either forbids the program itself or reaches 0 / -1, which both backends read as "no limit".
#   cpus          docker's own range, 0.01 to the CPUs of this machine (docker refuses more than it has).
#   file_size_mb  1 MiB to 64 GiB (RLIMIT_FSIZE: 0 kills the first write with SIGXFSZ).
#   tmp_mb        1 MiB to 64 GiB (tmpfs size: 0 means an unlimited tmpfs, the limit switched off).
#   output_bytes  1 KiB (room for a traceback's head and tail) to 64 MiB for each of stdout and stderr.
LIMIT_BOUNDS: dict[str, Bound] = {
    "timeout_s": Bound(0, 3600, "seconds", integer=False, low_open=True),
    "memory_mb": Bound(16, 64 * 1024, "MiB", integer=True),
    "pids": Bound(1, 4096, "processes", integer=True),
    "cpus": Bound(0.01, float(os.cpu_count() or 1), "CPUs of this machine", integer=False),
    "file_size_mb": Bound(1, 64 * 1024, "MiB", integer=True),
    "tmp_mb": Bound(1, 64 * 1024, "MiB", integer=True),
    "output_bytes": Bound(1024, 64 * 1024 * 1024, "bytes", integer=True),
}


def _checked(name: str, value: object) -> int | float:
    """`value` as the plain int or float the backends use, or LimitError naming the field and its range."""
    bound = LIMIT_BOUNDS[name]
    if isinstance(value, (bool, str, bytes)):
        raise LimitError(name, value, bound.describe())
    number: int | float
    try:
        number = operator.index(value) if bound.integer else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise LimitError(name, value, bound.describe()) from None
    if not math.isfinite(number) or number > bound.high or number < bound.low or (
            bound.low_open and number == bound.low):
        raise LimitError(name, value, bound.describe())
    return number


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution. Time limits are generous on purpose (evalplus's lesson).

    Every field is checked when a Limits is made (by the CLI, a task, a suite or `dataclasses.replace`):
    a value outside `LIMIT_BOUNDS` raises LimitError, a UsageError, instead of switching a limit off
    or turning into a misleading verdict. Values are stored as plain int / float."""

    timeout_s: float = 10.0  # wall clock
    memory_mb: int = 512  # address space (rlimit) and, for docker, memory + swap of the container
    pids: int = 64  # processes and threads
    cpus: float = 1.0  # docker CPU quota
    file_size_mb: int = 16  # largest single file the program may write
    tmp_mb: int = 64  # size of the writable tmpfs that holds the work dir
    output_bytes: int = 64 * 1024  # budget for each of stdout and stderr

    def __post_init__(self) -> None:
        for f in fields(self):  # a field without an entry in LIMIT_BOUNDS fails here, on every Limits()
            object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name)))

    def cpu_seconds(self) -> int:
        return int(self.timeout_s) + 2


@dataclass
class Verdict:
    status: Status
    exit_code: int | None
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    backend: str = ""
    detail: str = ""  # why the harness chose this status, one line

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class OutputBuffer:
    """Keeps the head and the tail of a stream within a byte budget; counts what it dropped."""

    def __init__(self, budget: int, tail: int | None = None):
        self.budget = max(budget, 64)
        self.tail_keep = min(tail if tail is not None else self.budget // 4, self.budget // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.budget - self.tail_keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_keep:
                del self.tail[: len(self.tail) - self.tail_keep]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        dropped = self.total - len(self.head) - len(self.tail)
        marker = f"\n...[{dropped} bytes truncated]...\n".encode()
        return (bytes(self.head) + marker + bytes(self.tail)).decode("utf-8", "replace")

    def ends_with_line(self, line: str) -> bool:
        data = bytes(self.head + self.tail) if not self.truncated else bytes(self.tail)
        return data.rstrip(b"\n").endswith(b"\n" + line.encode()) or data.rstrip(b"\n") == line.encode()


def pump(stream: IO[bytes], buf: OutputBuffer) -> threading.Thread:
    """Drain a pipe into a buffer on a thread, so a flood never blocks the child on a full pipe."""

    def _run() -> None:
        try:
            while True:
                chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
                if not chunk:
                    break
                buf.feed(chunk)
        except (OSError, ValueError):
            pass

    t = threading.Thread(target=_run, daemon=True)
    t.start()
    return t


@dataclass(frozen=True)
class Finished:
    """How a supervised process ended: exit code Popen-style (negative = signal), CPU of the
    process tree we waited for, whether the wall-clock limit hit, seconds since `start`."""

    returncode: int | None
    cpu_s: float | None
    timed_out: bool
    wall_s: float


def supervise(proc: subprocess.Popen, spec: bytes, out: OutputBuffer, err: OutputBuffer, *, timeout_s: float,
              start: float, stop: Callable[[], None], stop_always: bool = False, grace_s: float = 5.0) -> Finished:
    """Feed the runner its spec, wait up to timeout_s, then `stop` what is left (on timeout, or always),
    and collect the output. The one supervision loop every backend shares."""
    readers = [pump(proc.stdout, out), pump(proc.stderr, err)]
    try:
        proc.stdin.write(spec)
        proc.stdin.close()
    except OSError:
        pass  # the runner died before reading its spec: its exit status says why
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(os.wait4(proc.pid, 0)), daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    timed_out = waiter.is_alive()
    if timed_out or stop_always:
        stop()
    waiter.join(grace_s)
    if waiter.is_alive():  # stop() did not end it: the client itself goes
        proc.kill()
        waiter.join()
    wall = time.monotonic() - start
    for reader in readers:
        reader.join(2)
    returncode, cpu = None, None
    if result:
        _, status, usage = result[0]
        returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    proc.returncode = returncode if returncode is not None else -9  # reaped by wait4, not by Popen
    return Finished(returncode, cpu, timed_out, wall)


def rlimits(limits: Limits, nproc: int | None) -> dict:
    """The rlimits the in-sandbox runner sets before the program starts."""
    return {"as": limits.memory_mb * 1024 * 1024, "fsize": limits.file_size_mb * 1024 * 1024,
            "cpu": limits.cpu_seconds(), "nproc": nproc}


def runner_spec(files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits, *, nproc: int | None) -> bytes:
    """The JSON the in-sandbox runner reads on stdin: files to write, command to exec, rlimits."""
    encoded = {}
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else bytes(content)
        encoded[name] = data.hex()
    return json.dumps({"files": encoded, "command": list(command), "rlimits": rlimits(limits, nproc)}).encode()


def classify(*, returncode: int | None, timed_out: bool, oom: bool, stderr: OutputBuffer, stdout: OutputBuffer,
             nonce: str | None, signal_exit_codes: bool = False) -> tuple[Status, int | None, str]:
    """Turn how a process ended into a status. `returncode` < 0 means killed by that signal (Popen style);
    with `signal_exit_codes`, 128+N also means signal N (docker exec reports signals that way)."""
    sig = None
    if returncode is not None and returncode < 0:
        sig = -returncode
    elif signal_exit_codes and returncode is not None and 128 < returncode < 160:
        sig = returncode - 128
    if timed_out:
        return "timeout", returncode, "wall-clock limit reached"
    if sig == signal.SIGXCPU:
        return "timeout", returncode, "CPU-time limit reached"
    err_tail = stderr.text().rstrip().splitlines()[-1:] or [""]
    if oom or (returncode not in (0, None) and err_tail[0].startswith("MemoryError")):
        return "oom", returncode, "memory limit reached"
    if returncode == RUNNER_SETUP_FAILED and "harness-sandbox-runner:" in stderr.text():
        return "error", returncode, "sandbox runner could not set up the run"
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "killed", returncode, f"killed by {name}"
    if returncode == 0:
        if nonce is None or stdout.ends_with_line(nonce):
            return "passed", 0, "exit 0" if nonce is None else "exit 0 and the run's nonce after check()"
        return "failed", 0, "exit 0 without the run's nonce: the tests did not complete"
    return "failed", returncode, f"exit {returncode}"


def strip_nonce(text: str, nonce: str | None) -> str:
    body = text.rstrip("\n")
    if nonce and body.endswith(nonce):
        body = body[: -len(nonce)]
        return body[:-1] if body.endswith("\n") else body
    return text


@dataclass(frozen=True)
class Job:
    """One execution for `Sandbox.run_many`: the arguments of `Sandbox.run`."""

    files: Mapping[str, str | bytes]
    command: Sequence[str]
    limits: Limits = field(default_factory=Limits)
    nonce: str | None = None


def _check_names(files: Mapping[str, str | bytes]) -> None:
    for name in files:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise ValueError(f"file names must be relative paths inside the work dir: {name!r}")


class Sandbox(abc.ABC):
    """Runs untrusted programs. Never executes them inside the harness process."""

    name: str = "sandbox"
    workers: int = os.cpu_count() or 2  # executions in flight at once in run_many

    @abc.abstractmethod
    def _execute(self, files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits,
                 nonce: str | None) -> Verdict:
        """Backend-specific execution; `nonce` (when set) must end stdout for a pass."""

    def run(self, files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits | None = None,
            *, nonce: str | None = None) -> Verdict:
        """Write `files` into a fresh work dir, run `command` there under `limits`, report a Verdict.
        With `nonce`, exit 0 counts as passed only if stdout's last line is the nonce."""
        _check_names(files)
        verdict = self._execute(files, list(command), limits or Limits(), nonce)
        verdict.backend = self.name
        return verdict

    def run_many(self, jobs: Sequence[Job], workers: int | None = None) -> list[Verdict]:
        """Run many jobs, `workers` at a time, each with the same guarantees and verdict as `run` alone.
        Backends with warm sessions (bwrap, docker) run them through already started sandboxes."""
        for job in jobs:
            _check_names(job.files)

        def one(job: Job) -> Verdict:
            verdict = self._execute_warm(job)
            verdict.backend = self.name
            return verdict

        n = max(1, min(workers or self.workers, len(jobs)))
        if n == 1:
            return [one(job) for job in jobs]
        with ThreadPoolExecutor(n, thread_name_prefix=f"sandbox-{self.name}") as pool:
            return list(pool.map(one, jobs))

    def _execute_warm(self, job: Job) -> Verdict:
        """One job of run_many; backends with sessions override it (and fall back to _execute)."""
        return self._execute(job.files, list(job.command), job.limits, job.nonce)

    def close(self) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Release what the backend holds (containers, slots)."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The driver reads the nonce from a file and deletes it before any program code runs, so the program cannot
# read it off the disk; the nonce is printed only after check() returns.
_DRIVER = '''\
import os, sys
def _harness_main():
    with open(".nonce") as f:
        nonce = f.read().strip()
    os.unlink(".nonce")
    with open("solution.py") as f:
        source = f.read()
    namespace = {"__name__": "__main__", "__file__": "solution.py"}
    exec(compile(source, "solution.py", "exec"), namespace)
    namespace["check"](namespace[ENTRY_POINT])
    sys.stdout.flush()
    os.write(1, ("\\n" + nonce + "\\n").encode())
_harness_main()
'''


def program_files(program: str, test: str, entry_point: str, nonce: str) -> dict[str, str]:
    """Files for "program + test code + entry point": solution.py holds both, the driver runs check()."""
    if not entry_point.isidentifier():
        raise ValueError(f"entry point must be an identifier: {entry_point!r}")
    return {
        "solution.py": program + "\n\n" + test + "\n",
        "driver.py": _DRIVER.replace("ENTRY_POINT", repr(entry_point)),
        ".nonce": nonce,
    }


def check_program(sandbox: Sandbox, program: str, test: str, entry_point: str, limits: Limits | None = None) -> Verdict:
    """Run a program against its tests (`test` defines check(candidate)); passed only if check() returns."""
    nonce = "harness-ok-" + secrets.token_hex(16)
    verdict = sandbox.run(program_files(program, test, entry_point, nonce), ["python3", "-I", "driver.py"],
                          limits, nonce=nonce)
    verdict.stdout = strip_nonce(verdict.stdout, nonce)
    return verdict


def check_programs(sandbox: Sandbox, programs: Sequence[tuple[str, str, str]], limits: Limits | None = None,
                   workers: int | None = None) -> list[Verdict]:
    """check_program for many (program, test, entry_point) at once, through `run_many`; same verdicts."""
    nonces = ["harness-ok-" + secrets.token_hex(16) for _ in programs]
    jobs = [Job(program_files(program, test, entry_point, nonce), ["python3", "-I", "driver.py"], limits or Limits(),
                nonce) for (program, test, entry_point), nonce in zip(programs, nonces)]
    verdicts = sandbox.run_many(jobs, workers)
    for verdict, nonce in zip(verdicts, nonces):
        verdict.stdout = strip_nonce(verdict.stdout, nonce)
    return verdicts


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True  # gone already


def proc_uid_pids(uid: int) -> list[int]:
    """Live host processes owned by `uid` (used to find what a run left behind).

    Zombies are skipped: they hold nothing and cannot run, and where PID 1 does not reap
    orphans (as on these machines) they would otherwise look like a run that never ends."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and not _is_zombie(entry):
                    found.append(int(entry))
            except OSError:
                continue
    return found
