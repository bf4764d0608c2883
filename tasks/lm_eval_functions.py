"""lm-eval `!function`s that harness has ported natively, pinned by the sha256 of their file.

A YAML task loaded with `--include-path` may name `!function mod.fn`; harness never imports
that module. It looks the pair (sha256 of `<yaml dir>/<mod>.py`, `fn`) up in `PORTED` and uses
the native function listed here; anything else is refused (docs/lm-eval-yaml.md says how to add
one: port the function, check it against lm-eval on the same rows, add an entry with the hash
of the exact file you checked).
"""

from __future__ import annotations

import re

from harness.taskkit.lm_eval_yaml import PortedFunction, table
from harness.tasks import hellaswag

# sha256 of lm_eval/tasks/hellaswag/utils.py in lm-eval 0.4.13
HELLASWAG_UTILS_SHA256 = "07d23b60b28f2a4f658dcf8440623a63fe6644854ce9b846a114dde980dc1214"
# sha256 of lm_eval/tasks/wikitext/preprocess_wikitext.py in lm-eval 0.4.13
WIKITEXT_SHA256 = "a44020374b172159bf5be80a64d2c4194c9d5c77284f696ac666361338c8da7d"


def hellaswag_process_docs(docs: list[dict]) -> list[dict]:
    """lm_eval/tasks/hellaswag/utils.py:process_docs: `dataset.map(_process_doc)` keeps every column
    and adds query / choices / gold, which our `hellaswag.process_hub_row` computes."""
    return [{**doc, **hellaswag.process_hub_row(doc)} for doc in docs]


_WIKITEXT_REPLACE = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "), (" . ", ". "),
                     (" ! ", "! "), (" ? ", "? "), (" , ", ", ")]
_WIKITEXT_BRACKETS = [(r"\(\s*([^\)]*?)\s*\)", r"(\1)"), (r"\[\s*([^\]]*?)\s*\]", r"[\1]"), (r"{\s*([^}]*?)\s*}", r"{\1}"),
                      (r"\"\s*([^\"]*?)\s*\"", r'"\1"'), (r"'\s*([^']*?)\s*'", r"'\1'")]
_WIKITEXT_MISC = [("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" " + chr(176) + " ", chr(176)), (" \n", "\n"),
                  ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")]


def wikitext_detokenizer(doc: dict) -> str:
    """lm_eval/tasks/wikitext/preprocess_wikitext.py:wikitext_detokenizer, step for step."""
    string = doc["page"].replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    for old, new in _WIKITEXT_REPLACE:
        string = string.replace(old, new)
    for pattern, repl in _WIKITEXT_BRACKETS:
        string = re.sub(pattern, repl, string)
    for old, new in _WIKITEXT_MISC:
        string = string.replace(old, new)
    return string


def wikitext_process_results(doc: dict, results: tuple) -> dict:
    """lm_eval/tasks/wikitext/preprocess_wikitext.py:process_results: words and bytes of the page
    *before* detokenization, each metric's item [ll, count] (lm-eval's tuple)."""
    (loglikelihood,) = results
    words, nbytes = len(re.split(r"\s+", doc["page"])), len(doc["page"].encode("utf-8"))
    return {"word_perplexity": [loglikelihood, words], "byte_perplexity": [loglikelihood, nbytes],
            "bits_per_byte": [loglikelihood, nbytes]}


PORTED = table([
    PortedFunction(HELLASWAG_UTILS_SHA256, "process_docs", "process_docs", hellaswag_process_docs,
                   "tasks/hellaswag.py:process_hub_row"),
    PortedFunction(WIKITEXT_SHA256, "wikitext_detokenizer", "doc", wikitext_detokenizer,
                   "tasks/lm_eval_functions.py:wikitext_detokenizer"),
    PortedFunction(WIKITEXT_SHA256, "process_results", "process_results", wikitext_process_results,
                   "tasks/lm_eval_functions.py:wikitext_process_results"),
])
