"""The one redactor: what may be stored, logged, printed or rendered of a configuration.

Every boundary that keeps or shows a configuration (the run row and its metadata, a judge's
description, a serving benchmark's record, the command line kept for reproducibility) passes
it through here, so a secret is hidden the same way everywhere.

A value is hidden ("***") when its argument name says it is a credential (key, token, secret,
password); on a command line also the value after `--api-key`, and `name=value` pairs inside an
argument (as `--model-args api_key=...` carries them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MASK = "***"
SECRET_NAME = re.compile(r"key|token|secret|password", re.IGNORECASE)
SECRET_PAIR = re.compile(r"((?:api_?)?key|token|secret|password)=[^,\s]*", re.IGNORECASE)
SECRET_FLAGS = ("--api-key",)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact_args(args: Mapping[str, str]) -> dict[str, str]:
    """Backend or judge arguments as they may be stored: credential values masked."""
    return {k: (MASK if is_secret_name(k) else v) for k, v in args.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored: `key=...` pairs masked, and the value of `--api-key`."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        flag, sep, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            if sep:
                out.append(f"{flag}={MASK}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(SECRET_PAIR.sub(lambda m: m.group(1) + "=" + MASK, arg))
    return out
