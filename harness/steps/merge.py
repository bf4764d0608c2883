"""`merge`: fold a LoRA adapter into its base model, giving a plain transformers checkpoint.

The base is the adapter's `base_model_name_or_path` (the parent checkpoint the adapter was
trained on); it loads in its own dtype (dtype="auto"), so a float32 base gives a float32 merge
whose logits match the adapter's on top of the base to float rounding (the test measures it).
The child is model.safetensors + config + the adapter's tokenizer files: it no longer needs peft.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.backends.hf.options import adapter_base
from harness.core.errors import UsageError
from harness.steps.base import Step, StepOutput, unknown_keys
from harness.store.artifacts import Artifact

KIND = "merge"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def base_dir(adapter_dir: Path) -> str:
    """The base checkpoint an adapter applies to, refused in one line if it is gone."""
    base = adapter_base(adapter_dir)
    if base is None:
        raise UsageError(f"step {KIND}: {adapter_dir} has no adapter_config.json with a base_model_name_or_path")
    if not Path(base).is_dir():
        raise UsageError(f"step {KIND}: the adapter's base model {base} is not a local directory (moved or deleted?)")
    return base


def merged_model(adapter_dir: Path) -> Any:
    """The base with the adapter merged into its weights (peft merge_and_unload)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir(adapter_dir), dtype="auto")
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


class Merge(Step):
    kind = KIND
    accepts = ("hf-adapter",)
    libraries = ("torch", "transformers", "peft")

    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        unknown_keys(KIND, params, {})
        return {}

    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        from transformers import AutoTokenizer

        model = merged_model(parent.path)
        model.save_pretrained(str(out), safe_serialization=True)
        has_tokenizer = all((parent.path / name).is_file() for name in TOKENIZER_FILES)
        AutoTokenizer.from_pretrained(str(parent.path) if has_tokenizer else base_dir(parent.path)).save_pretrained(str(out))
        parameters = sum(p.numel() for p in model.parameters())  # tied weights counted once
        metadata = {"base": base_dir(parent.path), "adapter": str(parent.path), "dtype": str(model.dtype).removeprefix("torch.")}
        return StepOutput(format="hf", relation="merge", parameters=int(parameters), metadata=metadata)
