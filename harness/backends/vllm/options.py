"""What `vllm:TARGET --model-args ...` means: the model source and the validated engine arguments.

Free of vllm (and of torch) so that spec parsing, the missing-library error and fingerprints work
on machines without a GPU, which is also where they are tested.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from harness.backends import embedded
from harness.backends.hf import options as hf_options
from harness.backends.hf.options import ModelSource
from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.store.fingerprint import dir_fingerprint

EMBEDDED_TARGETS = frozenset({"embedded", embedded.EMBEDDED_ALIAS})
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_SEED = 0
INSTALL_HINT = "pip install 'harness[vllm]' (needs an NVIDIA GPU)"
ARG_HELP = {
    "tensor_parallel_size": "GPUs to shard the model over (default 1)",
    "gpu_memory_utilization": "fraction of GPU memory vLLM may reserve, in (0, 1] (default 0.9)",
    "max_model_len": "context window in tokens (default: the model config's)",
    "dtype": "auto (default: vLLM's choice from the config) | float32 | bfloat16 | float16",
    "revision": "hub revision (hub ids only; default main)",
    "seed": f"engine seed and the seed of sampled requests that carry none (default {DEFAULT_SEED})",
    # the evaluator passes --batch-size to every backend; vLLM schedules its own batches
    "batch_size": "accepted for --batch-size and ignored (vLLM batches continuously)",
}


@dataclass(frozen=True)
class VLLMOptions:
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    dtype: str
    revision: str | None
    seed: int

    def answer_changing(self) -> dict:
        """The cache key's arguments. Parallelism and memory share change only speed."""
        return {"dtype": self.dtype, "max_model_len": self.max_model_len, "seed": self.seed}


def vllm_installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def missing_library_error() -> UsageError:
    return UsageError(f"the vllm backend needs vLLM: {INSTALL_HINT}")


def resolve_source(target: str) -> ModelSource:
    """The embedded model (its dequantised checkpoint), a checkpoint directory, or a hub id."""
    if target in EMBEDDED_TARGETS:
        return ModelSource("embedded", embedded.EMBEDDED_ALIAS)
    if Path(target).expanduser().is_file():
        raise UsageError(f"vllm backend needs a checkpoint directory or a hub id, not a file: {target} (for a .gguf use gguf:PATH)")
    return hf_options.resolve_source(target)  # a directory, a missing path (UsageError), or a hub id


def _usage(message: str) -> UsageError:
    valid = "; ".join(f"{key}={help_}" for key, help_ in ARG_HELP.items())
    return UsageError(f"{message}; valid vllm model args: {valid}")


def _int(key: str, value: str, minimum: int) -> int:
    if not value.lstrip("-").isdigit() or int(value) < minimum:
        raise _usage(f"bad {key}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _fraction(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 < number <= 1.0:
        raise _usage(f"bad {key}={value!r}: expected a number in (0, 1]")
    return number


def parse_options(args: dict[str, str], source: ModelSource) -> VLLMOptions:
    unknown = sorted(set(args) - set(ARG_HELP))
    if unknown:
        raise _usage(f"unknown vllm model arg(s): {', '.join(unknown)}")
    dtype = args.get("dtype", "auto").lower()
    if dtype not in DTYPES:
        raise _usage(f"bad dtype={dtype!r}")
    if "batch_size" in args and args["batch_size"] != "auto":
        _int("batch_size", args["batch_size"], 1)  # still a typo check
    revision = args.get("revision")
    if revision is not None and source.kind != "hub":
        raise _usage(f"revision={revision} applies to hub ids only, not to {source.target}")
    if source.kind == "hub" and revision is None:
        revision = "main"
    return VLLMOptions(
        tensor_parallel_size=_int("tensor_parallel_size", args.get("tensor_parallel_size", "1"), 1),
        gpu_memory_utilization=_fraction("gpu_memory_utilization", args.get("gpu_memory_utilization", "0.9")),
        max_model_len=_int("max_model_len", args["max_model_len"], 16) if "max_model_len" in args else None,
        dtype=dtype,
        revision=revision,
        seed=_int("seed", args.get("seed", str(DEFAULT_SEED)), 0),
    )


def weights_fingerprint(source: ModelSource, revision: str | None) -> str:
    """Content hashes for local checkpoints (memoised), the id and revision for hub models."""
    if source.kind == "embedded":
        return embedded.embedded_fingerprint()
    if source.kind == "local":
        return dir_fingerprint(source.target)
    return sha256_json({"hub": source.target, "revision": revision})
