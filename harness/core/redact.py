"""The one redactor: what may be stored, logged, printed or rendered of a configuration.

Every boundary that keeps or shows a configuration (the run row and its metadata, a judge's
description, a serving benchmark's record, the command line kept for reproducibility, the
model spec in titles, `--json` and reports) passes it through here, so a secret is hidden the
same way everywhere.

Secrets by construction, not by name: an argument's value is kept in clear only when its name
is on HARMLESS (settings that change answers or speed and never carry a credential); every
other value is masked, `body.*` values (server-specific request fields, where an
`authorization` may travel) always. Credentials inside a URL (`http://user:TOKEN@host/v1`) are
used for the request but never shown: `strip_userinfo` replaces them with a marker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
USERINFO_MARKER = "***@"  # stands where a URL's user:password@ was
# Argument names whose values are settings, never credentials (backends, judges, in-process engines).
HARMLESS = frozenset({
    "model", "dtype", "device", "batch_size", "max_length", "trust_remote_code", "revision",
    "n_ctx", "n_threads", "n_gpu_layers", "n_batch", "seed", "kv_cache_type",
    "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "max_num_seqs", "enforce_eager", "quantization",
    "concurrency", "timeout", "max_retries", "probe", "api_key_env",
    "temperature", "max_tokens", "retries", "top_p", "top_k", "repeats", "mode",
})
PAIR_FLAGS = ("--model-args", "--judge-args")  # flags whose value is key=value[,key=value...]
SECRET_FLAGS = ("--api-key",)  # flags whose value is a credential
URL_WITH_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)")


def is_harmless(name: str) -> bool:
    return name in HARMLESS


def redact_value(name: str, value: Any) -> Any:
    """A value as it may be stored: in clear for a harmless name (URLs still lose their userinfo)."""
    if not is_harmless(name):
        return MASK
    return strip_userinfo(value) if isinstance(value, str) else value


def redact_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Backend, judge or engine arguments as they may be stored: only harmless values in clear."""
    return {k: redact_value(k, v) for k, v in args.items()}


def strip_userinfo(text: str) -> str:
    """Every URL in `text` without its user:password@ part (replaced by the marker ***@)."""
    return URL_WITH_USERINFO.sub(lambda m: m["scheme"] + USERINFO_MARKER, text)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without user:password@, (user, password) or None): the credentials for the request."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def redact_pairs(text: str) -> str:
    """`key=value,key=value` with every value that is not harmless masked."""
    out = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        out.append(f"{key}={redact_value(key.strip(), value)}" if sep else strip_userinfo(part))
    return ",".join(out)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line as it may be stored: --model-args/--judge-args values by the allowlist, the
    value of --api-key masked, and every URL without its userinfo."""
    out: list[str] = []
    pending: str | None = None  # the flag whose value is the next word
    for arg in argv:
        if pending is not None:
            out.append(_redact_flag_value(pending, arg))
            pending = None
            continue
        flag, sep, value = arg.partition("=")
        if arg.startswith("--") and sep:
            out.append(f"{flag}={_redact_flag_value(flag, value)}")
        elif arg in PAIR_FLAGS or arg in SECRET_FLAGS:
            out.append(arg)
            pending = arg
        else:
            out.append(strip_userinfo(arg))
    return out


def _redact_flag_value(flag: str, value: str) -> str:
    if flag in SECRET_FLAGS:
        return MASK
    if flag in PAIR_FLAGS:
        return redact_pairs(value)
    return strip_userinfo(value)
