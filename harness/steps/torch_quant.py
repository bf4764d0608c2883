"""`quantize_torch`: weight-only quantization of a transformers checkpoint with torchao.

The parent loads through transformers with a TorchAoConfig, which quantizes every nn.Linear
weight as it loads (the embedding, and the lm_head tied to it, stay float32: transformers skips
the output embedding and does not quantize input embeddings unless asked), and is saved with
save_pretrained. transformers flattens torchao's tensor subclasses into plain safetensors
entries (`<module>._weight_qdata`, `_weight_scale`, ...) with their layout in the file's
metadata, and config.json carries the quantization_config, so `from_pretrained(child)` (the hf
backend, with its default float32 dtype on CPU) gets the same quantized model back, no pickle
(.bin) needed.

Schemes:
- int8: torchao Int8WeightOnlyConfig, symmetric per-row int8 with one float32 scale (and an int8
  zero point) per output row, so a weight costs 8 bits plus 40 bits per row of `in_features`.
- int4: torchao Int4WeightOnlyConfig, offered only if it runs on this machine's CPU: checked on
  a small layer at check time. With torchao 0.18 / torch 2.13 CPU it does not (the plain layout
  needs the `mslk` kernels package, plain_int32 has no CPU kernel, tile_packed_to_4d needs CUDA),
  so int4 is refused with that reason.

`bits_per_weight` is measured on what was stored: the bytes of the quantized weights' entries in
model.safetensors (data, scales, zero points) over the number of weights they hold. The float32
embedding is outside that figure; `bits_per_parameter_all` in the metadata is every stored tensor
byte over every parameter.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.steps.base import Step, StepOutput, unknown_keys
from harness.store.artifacts import Artifact

KIND = "quantize_torch"
SCHEMES = ("int8", "int4")
PARAMS = {"scheme": "int8 (weight-only, per row) | int4 (weight-only, group 128; only where torchao runs it on CPU)"}
INT4_GROUP_SIZE = 128


def _ao_config(scheme: str) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    return Int8WeightOnlyConfig() if scheme == "int8" else Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE)


@functools.lru_cache(maxsize=1)
def int4_cpu_problem() -> str | None:
    """Why torchao's int4 weight-only does not run on this CPU (None if it does), tried on one small layer."""
    import torch
    from torchao.quantization import quantize_

    layer = torch.nn.Sequential(torch.nn.Linear(INT4_GROUP_SIZE, 64, bias=False)).to(torch.bfloat16)
    try:
        quantize_(layer, _ao_config("int4"))
        layer(torch.ones(1, INT4_GROUP_SIZE, dtype=torch.bfloat16))
    except Exception as error:  # noqa: BLE001 - any failure means the scheme cannot run here
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'failed'}"
    return None


def _dtype(scheme: str) -> Any:
    import torch

    # int4 kernels take bfloat16 activations; int8 weight-only keeps the checkpoint's float32
    return torch.bfloat16 if scheme == "int4" else torch.float32


def safetensors_sizes(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Bytes of each tensor entry and the file's metadata, read from the safetensors header only."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", None) or {}
    return {name: int(entry["data_offsets"][1] - entry["data_offsets"][0]) for name, entry in header.items()}, metadata


def quantized_weights(model: Any) -> dict[str, int]:
    """`module.param` -> number of weights, for each parameter stored as a torchao tensor subclass."""
    import torch

    found = {}
    for name, param in model.named_parameters(remove_duplicate=True):
        data = param.data if isinstance(param, torch.nn.Parameter) else param
        if type(data) is not torch.Tensor:
            found[name] = int(data.numel())
    return found


def bits(sizes: dict[str, int], weights: dict[str, int]) -> float:
    """Stored bits per quantized weight: the entries named `<module>._<param>_*` of each quantized param."""
    stored = 0
    for name in weights:
        module, _, param = name.rpartition(".")
        prefix = f"{module}._{param}_"
        stored += sum(size for entry, size in sizes.items() if entry.startswith(prefix))
    return 8 * stored / sum(weights.values())


class QuantizeTorch(Step):
    kind = KIND
    accepts = ("hf",)
    libraries = ("torch", "transformers", "torchao")

    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        unknown_keys(KIND, params, PARAMS)
        scheme = params.get("scheme", "int8")
        if scheme not in SCHEMES:
            raise UsageError(f"step {KIND}: bad scheme={scheme!r}: expected one of {', '.join(SCHEMES)}")
        if scheme == "int4" and (problem := int4_cpu_problem()) is not None:
            raise UsageError(f"step {KIND}: scheme=int4: torchao's int4 weight-only does not run on this machine's "
                             f"CPU ({problem}); use scheme=int8, or quantize_gguf for 4-bit")
        return {"scheme": scheme}

    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        import torchao
        from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

        scheme = params.get("scheme", "int8")
        model = AutoModelForCausalLM.from_pretrained(str(parent.path), dtype=_dtype(scheme),
                                                     quantization_config=TorchAoConfig(_ao_config(scheme)))
        model.save_pretrained(str(out), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(parent.path)).save_pretrained(str(out))
        weights = quantized_weights(model)
        if not weights:
            raise UsageError(f"step {KIND}: torchao quantized no weight of {parent.short_id} (no nn.Linear layers?)")
        sizes, _ = safetensors_sizes(out / "model.safetensors")
        parameters = sum(p.numel() for p in model.parameters())
        metadata = {
            "scheme": scheme, "torchao_config": type(_ao_config(scheme)).__name__, "torchao": torchao.__version__,
            "quantized_tensors": len(weights), "quantized_weights": sum(weights.values()),
            "bits_per_parameter_all": round(8 * sum(sizes.values()) / parameters, 4),
            "serialization": "safetensors (torchao tensor subclasses flattened by transformers)",
        }
        return StepOutput(format="hf-torchao", relation="quantized", parameters=int(parameters),
                          bits_per_weight=round(bits(sizes, weights), 4), metadata=metadata)
