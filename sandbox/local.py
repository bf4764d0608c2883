"""local backend: runs programs as plain subprocesses of this machine, with rlimits and a timeout but no
isolation (the program can read your files and reach the network). Only behind an explicit opt-in."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence

from harness.core.errors import UsageError
from harness.sandbox.base import RUNNER_SOURCE, Limits, OutputBuffer, Sandbox, Verdict, classify, runner_spec, supervise

OPT_IN_ENV = "HARNESS_ALLOW_CODE_EVAL"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def local_allowed(allow_unsandboxed: bool = False) -> bool:
    return allow_unsandboxed or os.environ.get(OPT_IN_ENV) == "1"


class LocalSandbox(Sandbox):
    name = "local"

    def __init__(self, allow_unsandboxed: bool = False):
        if not local_allowed(allow_unsandboxed):
            raise UsageError(f"the local backend runs model code unsandboxed: pass --allow-unsandboxed-code "
                             f"or set {OPT_IN_ENV}=1")
        warnings.warn("sandbox backend 'local' runs untrusted code WITHOUT isolation", RuntimeWarning, stacklevel=2)
        # The interpreter running harness, not PATH's python3: under pyenv that is a shell-script
        # shim costing tens of milliseconds per start (local ran at 15 executions/s because of it).
        self._python = sys.executable

    def _execute(self, files: Mapping[str, str | bytes], command: Sequence[str], limits: Limits,
                 nonce: str | None) -> Verdict:
        scratch = tempfile.mkdtemp(prefix="harness-local-")
        workdir = os.path.join(scratch, "work")
        path = os.pathsep.join([os.path.dirname(self._python), os.environ.get("PATH", "/usr/bin:/bin")])
        env = {"PATH": path, "HOME": workdir, "LANG": "C.UTF-8"}
        out, err = OutputBuffer(limits.output_bytes), OutputBuffer(limits.output_bytes)
        try:
            start = time.monotonic()
            proc = subprocess.Popen([self._python, "-I", "-S", "-c", RUNNER_SOURCE, workdir], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=scratch,
                                    start_new_session=True)
            done = supervise(proc, runner_spec(files, command, limits, nproc=None), out, err,
                             timeout_s=limits.timeout_s, start=start, stop=lambda: _kill_group(proc.pid),
                             stop_always=True)  # the whole group, also what a finished program left running
            status_, code, detail = classify(returncode=done.returncode, timed_out=done.timed_out, oom=False,
                                             stderr=err, stdout=out, nonce=nonce)
            return Verdict(status_, code, out.text(), err.text(), done.wall_s, done.cpu_s, out.truncated,
                           err.truncated, detail=detail)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
