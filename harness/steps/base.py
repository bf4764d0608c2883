"""The step contract: one model transform of a recipe, from a parent checkpoint to a child.

A step is given its parameters as written in the recipe. `check` validates them before any step
of the recipe runs (nothing is registered or written if one is bad): unknown keys, bad values, a
LoRA target module the model does not have, a quant type llama.cpp does not know. It may look at
`model_dir`, an hf checkpoint directory of the recipe's model (config.json, tokenizer), since
every step of a recipe keeps the architecture. `run` writes the child's files into `out` (a
staging directory: the runner hashes it and moves it to its content address afterwards) and says
what it made.

Steps are found by kind in STEPS and imported only when used (peft, trl, torchao and llama.cpp
are heavy).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import UsageError
from harness.store.artifacts import Artifact

STEPS: dict[str, str] = {
    "lora_sft": "harness.steps.lora:LoraSFT",
    "merge": "harness.steps.merge:Merge",
    "export_gguf": "harness.steps.gguf_export:ExportGGUF",
    "quantize_gguf": "harness.steps.gguf_quantize:QuantizeGGUF",
    "quantize_torch": "harness.steps.torch_quant:QuantizeTorch",
}

# The artifact format each kind makes: the recipe checks that every step's input is one it accepts.
PRODUCES: dict[str, str] = {
    "lora_sft": "hf-adapter",
    "merge": "hf",
    "export_gguf": "gguf",
    "quantize_gguf": "gguf",
    "quantize_torch": "hf-torchao",
}


@dataclass(frozen=True)
class StepOutput:
    """What a step made in its `out` directory."""

    format: str  # an artifact format: hf | hf-adapter | hf-torchao | gguf
    relation: str  # adapter | merge | finetune | quantized | converted | dequantized
    parameters: int | None = None
    bits_per_weight: float | None = None
    metadata: dict = field(default_factory=dict)  # kept with the artifact: loss curve, tensor types, ...
    data_fingerprint: str | None = None  # the training data's hash (training steps)


class Step(ABC):
    kind: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]  # parent artifact formats this step takes
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")  # distributions whose versions are recorded

    @abstractmethod
    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        """Validated parameters with defaults filled in (their canonical JSON is part of the step key);
        UsageError naming the step kind and the parameter for anything wrong."""

    def data_fingerprint(self, params: Mapping[str, Any]) -> str | None:
        """The hash of the data the step reads (part of the step key), None if it reads none."""
        return None

    @abstractmethod
    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        """Make the child from `parent` into `out`. Errors the user can fix are UsageError."""

    def versions(self) -> dict[str, str | None]:
        return {name: library_version(name) for name in self.libraries}


def library_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def step_kinds() -> list[str]:
    return sorted(STEPS)


def make_step(kind: str) -> Step:
    if kind not in STEPS:
        raise UsageError(f"unknown step kind {kind!r}: expected one of {', '.join(step_kinds())}")
    module_name, _, class_name = STEPS[kind].partition(":")
    _quiet_library_loggers()
    step = getattr(importlib.import_module(module_name), class_name)()
    assert isinstance(step, Step)
    return step


def _quiet_library_loggers() -> None:
    """torchao (imported by peft) warns on import about triton and a torch pytree deprecation; a
    refused recipe must say one line. torch sets up its loggers when imported, so it goes first."""
    import logging

    import torch  # noqa: F401 - imported for its logging set-up, which would undo the levels below

    for name in ("torch.utils._pytree", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def unknown_keys(kind: str, params: Mapping[str, Any], known: Mapping[str, str]) -> None:
    """UsageError for parameters the step does not take, listing the ones it does (with help)."""
    extra = sorted(set(params) - set(known))
    if extra:
        valid = "; ".join(f"{k}: {v}" for k, v in known.items())
        raise UsageError(f"step {kind}: unknown parameter(s) {', '.join(extra)}; valid: {valid}")
