"""`artifact:ID`: a checkpoint from the artifact store, evaluated like any other model spec.

ID is an artifact id or a unique prefix of one (at least 6 hex digits, as `harness lineage`
shows them). The artifact's format picks the backend: `gguf` artifacts run in the `gguf` backend,
`hf`, `hf-adapter` (peft, base model loaded from the adapter's config) and `hf-torchao` in the
`hf` backend; `--model-args` go to that backend unchanged. The backend is the same one
`hf:PATH` / `gguf:PATH` would build, so its fingerprint, and the cache, are the same: runs of
`artifact:ID` join to the artifact row by the model fingerprint they store. Only the spec shown
and stored becomes `artifact:<full id>`.
"""

from __future__ import annotations

from harness.backends.base import Backend, ModelSpec, make_backend
from harness.store import artifacts


def open_artifact(spec: ModelSpec) -> Backend:
    """The hf or gguf backend of the artifact `spec.target` (registered as the `artifact` prefix)."""
    found = artifacts.load(spec.target)
    prefix, _, target = found.model_spec.partition(":")
    backend = make_backend(ModelSpec(prefix=prefix, target=target, args=dict(spec.args)))
    backend.spec = ModelSpec(prefix="artifact", target=found.artifact_id, args=dict(spec.args))
    return backend


def artifact_fingerprint(artifact: artifacts.Artifact) -> str:
    """The model fingerprint a run of this artifact with default arguments stores."""
    backend = open_artifact(ModelSpec(prefix="artifact", target=artifact.artifact_id, args={}))
    try:
        return backend.fingerprint()
    finally:
        backend.close()
