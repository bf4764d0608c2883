"""Code-execution sandbox: one interface, three backends (docker, bwrap, local behind an opt-in).

    from harness.sandbox import get_sandbox, Limits, check_program
    with get_sandbox("auto") as box:
        verdict = box.run({"main.py": source}, ["python3", "main.py"], Limits(timeout_s=10))
        verdict = check_program(box, program, test_code, entry_point)   # passed only if check() returned
        verdicts = check_programs(box, [(program, test_code, entry_point), ...])  # many, through warm sessions
        verdicts = box.run_many([Job(files, command, limits), ...])         # same verdicts as run() one by one
"""

from harness.sandbox.auto import BACKENDS, get_sandbox, resolve_backend
from harness.sandbox.base import Job, Limits, Sandbox, Status, Verdict, check_program, check_programs, program_files

__all__ = ["BACKENDS", "Job", "Limits", "Sandbox", "Status", "Verdict", "check_program", "check_programs",
           "get_sandbox", "program_files", "resolve_backend"]
