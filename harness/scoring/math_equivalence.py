"""Symbolic answer checks that may hang, run in a worker process the parent can kill.

- `sympy_equiv(x1, x2)` is the sympy part of `is_equiv` in lm-evaluation-harness 0.4.13's
  lm_eval/tasks/minerva_math/utils.py: `parse_latex` both, `sympy.simplify(x1 - x2) == 0`, any
  parse / subtract / simplify error or the 5 s `signal.alarm` -> False.
- `math_verify_equiv(gold_text, response)` is the `math_verify` metric of the same file:
  `verify(gold=parse(solution), target=parse(response))` from the `math-verify` package.

Why a process: lm-eval's alarm cannot interrupt work that never returns to the interpreter (a
huge integer power inside one C call), and it only works on the main thread. Here the same alarm
runs inside a long-lived worker (its main thread, so math_verify's own signal timeouts work too),
and the parent waits at most `timeout_s + GRACE_S` for an answer; past that it kills the worker,
answers False (lm-eval's verdict on a timeout) and starts a fresh worker on the next call.
The worker is a fresh interpreter (never a fork: the parent may hold torch threads).
"""

from __future__ import annotations

import atexit
import json
import select
import signal
import subprocess
import sys
import threading
from typing import Any

TIMEOUT_S = 5  # lm-eval's `timeout(seconds=5)`
GRACE_S = 1.0  # how long past the in-worker alarm the parent waits before killing the worker
STARTUP_S = 120.0  # importing sympy, antlr4 and math_verify on a loaded machine


# --- worker side -------------------------------------------------------------------------------


class _Timeout(Exception):
    """The worker's alarm: one equivalence check overran its time."""


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def _sympy_equiv(x1: str, x2: str, seconds: int) -> bool:
    import sympy
    from sympy.parsing.latex import parse_latex

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        try:
            diff = parse_latex(x1) - parse_latex(x2)
        except Exception:  # parse or subtraction error: lm-eval returns False for each
            return False
        return bool(sympy.simplify(diff) == 0)
    except Exception:  # _Timeout, ValueError and anything else: False, as lm-eval
        return False
    finally:
        signal.alarm(0)


def _math_verify(gold_text: str, response: str, seconds: int) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(gold=parse(gold_text), target=parse(response)))
    except Exception:
        return False


_OPS = {"sympy": _sympy_equiv, "math_verify": _math_verify}


def _serve() -> None:
    """The worker's loop: one JSON line [op, args] in, one JSON line (true/false) out, until stdin closes."""
    import math_verify  # noqa: F401  (warm the imports before saying ready)
    import sympy.parsing.latex  # noqa: F401

    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        try:
            op, args = json.loads(line)
            result = bool(_OPS[op](*args))
        except Exception:
            result = False
        out.write(json.dumps(result) + "\n")
        out.flush()


# --- parent side -------------------------------------------------------------------------------


class EquivalenceWorker:
    """One worker process (`python -m harness.scoring.math_equivalence`, so nothing of the parent's
    __main__ is re-run), started lazily, killed and replaced after a call overruns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def _readline(self, process: subprocess.Popen[str], wait_s: float) -> str | None:
        """One line of the worker's stdout within `wait_s` seconds, None on timeout or exit."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], wait_s)
        return process.stdout.readline() or None if ready else None

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.scoring.math_equivalence"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        if self._readline(process, STARTUP_S) != '"ready"\n':
            process.kill()
            process.wait()
            raise RuntimeError("the math equivalence worker did not start (are sympy, antlr4 and math-verify installed?)")
        self._process = process
        return process

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    stream.close()
        self._process = None

    def call(self, op: str, args: tuple, wait_s: float) -> bool:
        """The worker's answer, or False when it overran `wait_s` (the worker is then killed)."""
        with self._lock:
            process = self._process if self._process is not None and self._process.poll() is None else self._start()
            assert process.stdin is not None
            try:
                process.stdin.write(json.dumps([op, list(args)]) + "\n")
                process.stdin.flush()
                line = self._readline(process, wait_s)
            except OSError:
                line = None
            if line is not None:
                return bool(json.loads(line))
            self.stop()
            return False


_WORKER = EquivalenceWorker()
atexit.register(_WORKER.stop)


def sympy_equiv(x1: str, x2: str, timeout_s: int = TIMEOUT_S) -> bool:
    """lm-eval minerva's sympy check of two normalised answers; False on error or timeout."""
    return _WORKER.call("sympy", (x1, x2, timeout_s), timeout_s + GRACE_S)


def math_verify_equiv(gold_text: str, response: str, timeout_s: int = TIMEOUT_S) -> bool:
    """math_verify's verdict on the response against the gold solution text.

    parse and verify each have a 5 s timeout of their own (math_verify's defaults: one parse of
    each text and one verify), so the parent waits for three of them plus grace."""
    return _WORKER.call("math_verify", (gold_text, response, timeout_s), 3 * timeout_s + GRACE_S)


def stop_worker() -> None:
    _WORKER.stop()


if __name__ == "__main__":
    _serve()
