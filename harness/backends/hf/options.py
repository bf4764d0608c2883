"""What `hf:TARGET --model-args ...` means: the model source and the validated arguments.

Kept free of torch and transformers so that building a backend (and fingerprinting it) for a run
served entirely from the cache costs milliseconds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.backends.embedded import EMBEDDED_ALIAS
from harness.core.errors import UsageError

DTYPES = ("float32", "bfloat16", "float16", "auto")
DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?|mps)$")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# One help line per argument, shown whenever an argument is unknown or malformed.
ARG_HELP = {
    "dtype": "float32 (default on cpu) | bfloat16 | float16 | auto (default on cuda: the checkpoint's dtype)",
    "device": "cpu (default) | cuda | cuda:N | auto",
    "batch_size": "rows per forward pass, or auto (default: a token budget per pass)",
    "max_length": "context window in tokens (default: from the model config, as lm-eval)",
    "trust_remote_code": "true | false (default)",
    "revision": "hub revision (hub ids only; default main)",
}
# A hub id is `name` or `owner/name`; anything else that looks like a path is treated as one.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

SourceKind = Literal["embedded", "local", "hub"]


ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    target: str  # the alias, an absolute directory, or a hub id
    # a local peft adapter directory (it holds adapter_config.json): the base it applies to, an
    # absolute directory, the embedded alias or a hub id; the backend loads it and wraps it
    adapter_base: str | None = None


def adapter_base(directory: str | Path) -> str | None:
    """The base_model_name_or_path of a peft adapter directory, None if it is not one."""
    config_path = Path(directory) / ADAPTER_CONFIG
    if not config_path.is_file():
        return None
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as error:
        raise UsageError(f"unreadable {config_path}: {error}") from None
    if not isinstance(base, str) or not base:
        raise UsageError(f"{config_path} names no base_model_name_or_path, so the adapter has no model to apply to")
    return base


def _resolve_adapter_base(directory: Path) -> str | None:
    """The adapter's base as a source target; refused now if it is a path that is gone."""
    base = adapter_base(directory)
    if base is None or base == EMBEDDED_ALIAS:
        return base
    base_path = Path(base).expanduser()
    if base_path.is_dir():
        return str(base_path.resolve())
    if _looks_like_path(base):
        raise UsageError(f"adapter {directory}: its base model {base} does not exist (moved or deleted?)")
    return base  # a hub id


@dataclass(frozen=True)
class HFOptions:
    dtype: str
    device: str
    batch_size: int | None  # None: auto
    max_length: int | None  # None: from the model config
    trust_remote_code: bool
    revision: str | None  # hub ids only

    def answer_changing(self) -> dict:
        """The arguments that change answers (the cache key); batch_size and device do not."""
        return {"dtype": self.dtype, "max_length": self.max_length, "trust_remote_code": self.trust_remote_code}


def _looks_like_path(target: str) -> bool:
    return (
        target.startswith(("/", "./", "../", "~", "."))
        or target.endswith((".gguf", ".safetensors", ".bin"))
        or not HUB_ID_PATTERN.match(target)
    )


def resolve_source(target: str) -> ModelSource:
    if target == EMBEDDED_ALIAS:
        return ModelSource("embedded", target)
    path = Path(target).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"hf backend needs a checkpoint directory, not a file: {target} (for a .gguf use gguf:PATH)")
        return ModelSource("local", str(path.resolve()), _resolve_adapter_base(path))
    if _looks_like_path(target):
        raise UsageError(f"model path does not exist: {target}")
    return ModelSource("hub", target)


HUB_CHECK_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_model(repo_id: str, revision: str | None) -> None:
    """A hub id that can be loaded (in the local cache, or on the hub when online), said in one line
    within seconds: before any database is opened, not after a minute of download retries."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return
    if hub_offline():
        raise UsageError(f"hf model {repo_id} is not in the local Hugging Face cache and the hub is offline "
                         "(HF_HUB_OFFLINE): download it first, or give a local checkpoint directory")
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=HUB_CHECK_TIMEOUT_S)
    except RevisionNotFoundError:
        raise UsageError(f"hf model {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise UsageError(f"hf model {repo_id} does not exist on the hub (or is private: set HF_TOKEN)") from None
    except Exception as exc:  # noqa: BLE001 - any failure to reach the hub is the same answer for the user
        raise UsageError(f"cannot reach the Hugging Face hub to find {repo_id}: {type(exc).__name__}") from None


def _usage(message: str) -> UsageError:
    valid = "; ".join(f"{key}={help_}" for key, help_ in ARG_HELP.items())
    return UsageError(f"{message}; valid hf model args: {valid}")


def _positive_int(key: str, value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise _usage(f"bad {key}={value!r}: expected a positive integer")
    return int(value)


def parse_options(args: dict[str, str], source: ModelSource) -> HFOptions:
    unknown = sorted(set(args) - set(ARG_HELP))
    if unknown:
        raise _usage(f"unknown hf model arg(s): {', '.join(unknown)}")
    device = args.get("device", "cpu").lower()
    if not DEVICE_PATTERN.match(device):
        raise _usage(f"bad device={device!r}")
    # float32 on CPU: half precision is slow there and costs accuracy; on a GPU the checkpoint's dtype.
    dtype = args.get("dtype", "float32" if device == "cpu" else "auto").lower()
    if dtype not in DTYPES:
        raise _usage(f"bad dtype={dtype!r}")
    batch_text = args.get("batch_size", "auto").lower()
    batch_size = None if batch_text == "auto" else _positive_int("batch_size", batch_text)
    max_length = _positive_int("max_length", args["max_length"]) if "max_length" in args else None
    trust_text = args.get("trust_remote_code", "false").lower()
    if trust_text not in BOOLEANS:
        raise _usage(f"bad trust_remote_code={trust_text!r}")
    revision = args.get("revision")
    if revision is not None and source.kind != "hub":
        raise _usage(f"revision={revision} applies to hub ids only, not to {source.target}")
    if source.kind == "hub" and revision is None:
        revision = "main"
    return HFOptions(dtype, device, batch_size, max_length, BOOLEANS[trust_text], revision)
