"""The `quantize_gguf` step: a GGUF quantized by llama.cpp's own quantizer (llama_model_quantize).

The quantizer is llama.cpp's, not a re-implementation, so the child is exactly what
`llama-quantize` makes. A type names a llama.cpp file type (ftype), not one type per tensor:
norms stay F32, K-quant mixes (Q4_K_M, ...) give some tensors more bits, and a tensor whose rows
do not split into the type's blocks falls back to another type. SmolLM2-135M's rows are 576 wide
(a multiple of 32 but not of 256) except ffn_down's (1536), so K-quants (256-weight blocks) fall back
on most tensors: Q6_K -> Q8_0, Q5_K -> Q5_1, Q4_K -> Q5_0, Q3_K/Q2_K -> Q4_0 in this llama.cpp.
The step therefore reads the result back (gguf.GGUFReader) and records the type each tensor got,
the fallbacks, and the true bits per weight (all tensor bytes over all weights).

Quantizing is deterministic for a given llama.cpp build; `threads` defaults to 1 all the same.
Types that need an importance matrix (IQ1/IQ2/IQ3_XXS, Q2_K_S) are refused by `check`: the step
takes no calibration data. llama.cpp's log is collected while it runs instead of going to stderr;
its last error line is the message of the UsageError when it fails.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.steps.base import Step, StepOutput, unknown_keys
from harness.store.artifacts import GGUF_FILE, Artifact

KIND = "quantize_gguf"
# type -> (llama_ftype from llama.h, the GGML type of its ordinary matrices). The ftype numbers are
# llama.h's stable enum (a test checks them against llama_cpp's LLAMA_FTYPE_MOSTLY_* constants);
# they are written out so that `check` does not load llama.cpp.
TYPES: dict[str, tuple[int, str]] = {
    "F16": (1, "F16"), "BF16": (32, "BF16"), "Q8_0": (7, "Q8_0"),
    "Q5_1": (9, "Q5_1"), "Q5_0": (8, "Q5_0"), "Q4_1": (3, "Q4_1"), "Q4_0": (2, "Q4_0"),
    "IQ4_NL": (25, "IQ4_NL"), "IQ4_XS": (30, "IQ4_XS"),
    "Q6_K": (18, "Q6_K"), "Q5_K_M": (17, "Q5_K"), "Q5_K_S": (16, "Q5_K"),
    "Q4_K_M": (15, "Q4_K"), "Q4_K_S": (14, "Q4_K"),
    "Q3_K_L": (13, "Q3_K"), "Q3_K_M": (12, "Q3_K"), "Q3_K_S": (11, "Q3_K"), "Q2_K": (10, "Q2_K"),
}
FTYPE_NAMES = {ftype: name for name, (ftype, _) in TYPES.items()}
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S")
FLOAT_TYPES = ("F32", "F16", "BF16")
FLOAT_FTYPES = (0, 1, 32)  # llama_ftype ALL_F32, MOSTLY_F16, MOSTLY_BF16
GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
PARAMS = {
    "type": f"llama.cpp quant type, required: {', '.join(TYPES)}",
    "threads": "quantizer threads (default 1)",
    "requantize": "true to quantize a parent that is already quantized (default false: quality compounds)",
}


class QuantizeGGUF(Step):
    kind = KIND
    accepts = ("gguf",)
    libraries = ("llama_cpp_python", "gguf")

    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        unknown_keys(KIND, params, PARAMS)
        if "type" not in params:
            raise UsageError(f"step {KIND}: parameter type is required: one of {', '.join(TYPES)}")
        qtype = str(params["type"]).upper()
        if qtype in NEEDS_IMATRIX:
            raise UsageError(f"step {KIND}: type {qtype} needs an imatrix (importance matrix), which this step "
                             f"does not make; use one of {', '.join(TYPES)}")
        if qtype not in TYPES:
            raise UsageError(f"step {KIND}: unknown type {params['type']!r}; valid: {', '.join(TYPES)}")
        threads = params.get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UsageError(f"step {KIND}: threads must be a positive integer, got {threads!r}")
        requantize = params.get("requantize", False)
        if not isinstance(requantize, bool):
            raise UsageError(f"step {KIND}: requantize must be true or false, got {requantize!r}")
        return {"type": qtype, "threads": threads, "requantize": requantize}

    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        qtype = str(params["type"]).upper()
        source, target = Path(parent.model_path), out / GGUF_FILE
        requantize = bool(params.get("requantize", False))
        if not requantize and (quantized := quantized_types(source)):
            raise UsageError(f"step {KIND}: the parent {source.name} is already quantized ({', '.join(quantized)}); "
                             "export an F32 or F16 GGUF first, or set requantize: true")
        quantize(source, target, TYPES[qtype][0], int(params.get("threads", 1)), requantize)
        return describe(target, qtype)


# -- running llama.cpp ----------------------------------------------------------------------------


@contextmanager
def collected_log() -> Iterator[list[tuple[int, str]]]:
    """llama.cpp's (and ggml's) log lines go to the list while the block runs, not to stderr."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[tuple[int, str]] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append((level, text.decode("utf-8", errors="replace")))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:  # llama-cpp-python's own callback again
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def quantize(source: Path, target: Path, ftype: int, threads: int, requantize: bool) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = ftype, threads, requantize
    with collected_log() as lines:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        errors = [text.strip() for level, text in lines if level == GGML_LOG_LEVEL_ERROR and text.strip()]
        reason = errors[-1] if errors else f"llama_model_quantize returned {status}"
        raise UsageError(f"step {KIND}: llama.cpp could not quantize {source.name}: {reason}")


# -- what came out --------------------------------------------------------------------------------


def _tensors(path: Path) -> list[Any]:
    from gguf import GGUFReader

    return list(GGUFReader(str(path)).tensors)


def quantized_types(path: Path) -> list[str]:
    """The quantized types of a GGUF file ([] for a float one): its general.file_type when known (one
    header read), else its tensors' types (GGUFReader parses the whole vocabulary first: seconds)."""
    from harness.backends.gguf.metadata import GGUFFormatError, read_metadata

    try:
        file_type = read_metadata(path).get("general.file_type")
    except (GGUFFormatError, OSError) as error:
        raise UsageError(f"step {KIND}: cannot read the parent {path}: {error}") from None
    if file_type in FLOAT_FTYPES:
        return []
    if isinstance(file_type, int) and file_type in FTYPE_NAMES:
        return [FTYPE_NAMES[file_type]]
    return sorted({t.tensor_type.name for t in _tensors(path)} - set(FLOAT_TYPES))


def describe(path: Path, qtype: str) -> StepOutput:
    """The StepOutput of a quantized file: per-tensor types, fallbacks and true bits per weight."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    tensors = _tensors(path)
    base = TYPES[qtype][1]
    block = GGML_QUANT_SIZES[GGMLQuantizationType[base]][0]
    types = {t.name: t.tensor_type.name for t in tensors}
    counts: dict[str, int] = {}
    for name in types.values():
        counts[name] = counts.get(name, 0) + 1
    matrices = [t for t in tensors if len(t.shape) >= 2]  # 1-D tensors (norms) stay F32 by design
    off_type = [t for t in matrices if t.tensor_type.name != base]
    fallback_types: dict[str, int] = {}
    for t in off_type:
        fallback_types[t.tensor_type.name] = fallback_types.get(t.tensor_type.name, 0) + 1
    parameters = sum(int(t.n_elements) for t in tensors)
    nbytes = sum(int(t.n_bytes) for t in tensors)
    metadata = {
        "type": qtype,
        "tensor_types": types,
        "type_counts": dict(sorted(counts.items())),
        "fallbacks": len(off_type),  # weight matrices not of the type's base type (shape fallbacks and K-quant mixes)
        "fallback_types": dict(sorted(fallback_types.items())),
        "shape_fallbacks": sum(int(t.shape[0]) % block != 0 for t in matrices),  # rows that do not split into blocks
    }
    return StepOutput(format="gguf", relation="quantized", parameters=parameters,
                      bits_per_weight=8 * nbytes / parameters, metadata=metadata)
