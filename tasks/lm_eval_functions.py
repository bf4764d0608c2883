"""lm-eval `!function`s that harness has ported natively, pinned by the sha256 of their file.

A YAML task loaded with `--include-path` may name `!function mod.fn`; harness never imports
that module. It looks the pair (sha256 of `<yaml dir>/<mod>.py`, `fn`) up in `PORTED` and uses
the native function listed here; anything else is refused (docs/lm-eval-yaml.md says how to add
one: port the function, check it against lm-eval on the same rows, add an entry with the hash
of the exact file you checked).
"""

from __future__ import annotations

from harness.taskkit.lm_eval_yaml import PortedFunction, table
from harness.tasks import hellaswag

# sha256 of lm_eval/tasks/hellaswag/utils.py in lm-eval 0.4.13
HELLASWAG_UTILS_SHA256 = "07d23b60b28f2a4f658dcf8440623a63fe6644854ce9b846a114dde980dc1214"


def hellaswag_process_docs(docs: list[dict]) -> list[dict]:
    """lm_eval/tasks/hellaswag/utils.py:process_docs: `dataset.map(_process_doc)` keeps every column
    and adds query / choices / gold, which our `hellaswag.process_hub_row` computes."""
    return [{**doc, **hellaswag.process_hub_row(doc)} for doc in docs]


PORTED = table([
    PortedFunction(HELLASWAG_UTILS_SHA256, "process_docs", "process_docs", hellaswag_process_docs,
                   "tasks/hellaswag.py:process_hub_row"),
])
