"""What a recipe file says: a parent model, steps that make checkpoints, and how to judge them.

```yaml
description: what this recipe is for
parent: hf:smollm2-135m-instruct     # hf:DIR, gguf:FILE.gguf, artifact:ID (`--from` overrides it)
seed: 1234
steps:
  - {name: sft, kind: lora_sft, params: {data: "task:gsm8k", limit: 16, steps: 8}}
  - {name: merged, kind: merge}                  # input: the previous step's output...
  - {name: f32, kind: export_gguf, params: {dtype: F32}}
  - {name: q8, kind: quantize_gguf, from: f32, params: {type: Q8_0}}   # ...or a named one
evaluate:                             # every checkpoint of the recipe runs this (a suite's fields)
  data: fixture
  tasks: [{name: hellaswag, limit: 20}]
fidelity: {corpus: gsm8k-train, n_ctx: 256, windows: 4}   # KLD against the parent per edge
speed: {prompts: 4, input_len: 64, output_len: 16}       # in-process bench per checkpoint
gate: {max_drop: 5.0}                 # a gate policy (harness gate's fields), applied per edge
```

Unknown keys are errors; `from` names an earlier step or `parent`. The recipe id is the hash of
the canonical recipe (after `--from`) and the resolved environment (library versions), so the
same file run with other libraries is another recipe run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.resources import first_validation_error, named_yaml, package_dir
from harness.core.textfile import read_yaml
from harness.decisions.gate import Policy
from harness.run.suite import Suite
from harness.steps.base import library_version, step_kinds

RECIPES_DIR = package_dir("harness.recipes")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Libraries whose versions decide what a recipe makes (part of the recipe id).
ENVIRONMENT = ("harness", "torch", "transformers", "peft", "trl", "torchao", "accelerate", "gguf", "llama_cpp_python")


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str
    source: str | None = Field(default=None, alias="from")  # an earlier step's name, or "parent"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value) or value == "parent":
            raise ValueError(f"step name {value!r} must be a letter then letters, digits, - or _ (and not 'parent')")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in step_kinds():
            raise ValueError(f"unknown step kind {value!r}: expected one of {', '.join(step_kinds())}")
        return value


class Fidelity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = "gsm8k-train"
    n_ctx: int = Field(default=256, ge=16, le=4096)
    windows: int = Field(default=4, ge=1)


class Speed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: int = Field(default=4, ge=1)
    input_len: int = Field(default=64, ge=1)
    output_len: int = Field(default=16, ge=1)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    description: str = ""
    parent: str
    seed: int = 1234
    steps: list[StepSpec] = Field(min_length=1)
    evaluate: Suite
    fidelity: Fidelity | None = Field(default_factory=Fidelity)
    speed: Speed | None = Field(default_factory=Speed)
    gate: Policy = Field(default_factory=Policy)

    @model_validator(mode="after")
    def _sources(self) -> Recipe:
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}")
            if step.source is not None and step.source != "parent" and step.source not in seen:
                raise ValueError(f"step {step.name}: from {step.source!r} names no earlier step (or 'parent')")
            seen.append(step.name)
        return self

    def input_of(self, index: int) -> str:
        """The name of the node a step reads: `from`, else the previous step, else the parent."""
        step = self.steps[index]
        if step.source is not None:
            return step.source
        return self.steps[index - 1].name if index > 0 else "parent"


def environment() -> dict[str, str | None]:
    return {name: library_version(name) for name in ENVIRONMENT}


def recipe_id(recipe: Recipe) -> str:
    return sha256_json({"recipe": recipe.model_dump(mode="json", by_alias=True), "environment": environment()})[:16]


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    return named_yaml(name_or_path, RECIPES_DIR, "recipe", recipe_names, hint="; or give a .yaml path")


def load_recipe(name_or_path: str, parent: str | None = None) -> tuple[Path, Recipe]:
    """The validated recipe; `parent` (the `--from` option) replaces its parent model spec."""
    path = recipe_path(name_or_path)
    data = read_yaml(path, "recipe")
    if not isinstance(data, dict):
        raise UsageError(f"malformed recipe {path}: expected a mapping with parent, steps and evaluate")
    if parent is not None:
        data["parent"] = parent
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"malformed recipe {path}: {first_validation_error(exc, 'recipe')}") from None
    return path, recipe
