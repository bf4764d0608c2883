"""The content-addressed checkpoint store: `$HARNESS_CACHE_DIR/artifacts/<artifact_id>/`
(`$HARNESS_ARTIFACTS_DIR` if set).

An artifact is a directory of model files plus `artifact.json` (its format and what a step
recorded about it). Its id is the sha256 over (relative name, content hash) of every file but
`artifact.json`, so the same bytes made twice have one address. A step writes into a staging
directory (`.staging-*` beside the artifacts) and `commit` hashes it, writes `artifact.json`
last and renames the directory into place: a killed step leaves a staging directory (removed
by the next `staging()`), never a directory under an artifact id that looks complete.

Checkpoints that were not made here (a recipe's parent, the embedded model) are imported by
`import_files`: the artifact directory holds symlinks to the original files, so a 500 MB
checkpoint is not copied. Their id is the same content hash; if the originals change, `load`
no longer finds the files it recorded and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.store.fingerprint import cache_dir, file_sha256

MANIFEST = "artifact.json"
FORMATS = ("hf", "hf-adapter", "hf-torchao", "gguf")
GGUF_FILE = "model.gguf"  # the file name of a gguf artifact's model
MIN_PREFIX = 6  # shortest id prefix `load` accepts


@dataclass(frozen=True)
class Artifact:
    artifact_id: str
    path: Path
    format: str  # one of FORMATS
    bytes: int  # of the model files (targets of symlinks counted)
    parameters: int | None = None
    bits_per_weight: float | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.artifact_id[:12]

    @property
    def model_path(self) -> Path:
        """What a backend loads: the directory (hf formats) or the .gguf file in it."""
        return self.path / GGUF_FILE if self.format == "gguf" else self.path

    @property
    def model_spec(self) -> str:
        """The model spec that evaluates this checkpoint (`harness run --model ...`)."""
        return f"{'gguf' if self.format == 'gguf' else 'hf'}:{self.model_path}"


def artifacts_root() -> Path:
    """`$HARNESS_ARTIFACTS_DIR`, else `$HARNESS_CACHE_DIR/artifacts` (tests give each module its own)."""
    configured = os.environ.get("HARNESS_ARTIFACTS_DIR")
    return Path(configured).expanduser() if configured else cache_dir() / "artifacts"


def _content_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.name != MANIFEST and (p.is_file() or p.is_symlink())
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def content_id(directory: Path) -> str:
    """sha256 over (relative name, file sha256) of every file but the manifest (symlinks followed)."""
    files = _content_files(directory)
    if not files:
        raise UsageError(f"no files in {directory} to make an artifact of")
    missing = [p for p in files if not p.exists()]
    if missing:
        raise UsageError(f"artifact file {missing[0]} points to a file that is gone")
    return sha256_json([[p.relative_to(directory).as_posix(), file_sha256(p)] for p in files])


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in _content_files(directory) if p.exists())


def _remove_stale_staging(root: Path) -> None:
    """Staging directories of steps whose process is gone (the pid is in the name)."""
    for stale in root.glob(".staging-*"):
        pid_text = stale.name.split("-")[1] if stale.name.count("-") >= 2 else ""
        alive = pid_text.isdigit() and _pid_alive(int(pid_text))
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staging(label: str = "step") -> Iterator[Path]:
    """A fresh directory for a step to write into; removed unless `commit` moved it into place."""
    root = artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    path = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-{label}-", dir=root))
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def commit(staged: Path, fmt: str, *, parameters: int | None = None, bits_per_weight: float | None = None,
           metadata: dict | None = None) -> Artifact:
    """Moves a staged directory to its content address (the manifest written last) and returns it.
    If the same content is already stored, the staged copy is dropped and the stored one returned."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown artifact format {fmt!r}")
    artifact_id = content_id(staged)
    manifest = {"artifact_id": artifact_id, "format": fmt, "bytes": _size(staged), "parameters": parameters,
                "bits_per_weight": bits_per_weight, "metadata": metadata or {}}
    target = artifacts_root() / artifact_id
    if is_complete(target):
        shutil.rmtree(staged, ignore_errors=True)
        return load(artifact_id)
    if target.exists():  # a directory without its manifest is not ours to trust
        shutil.rmtree(target)
    tmp_manifest = staged / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp_manifest, staged / MANIFEST)
    staged.chmod(0o755)
    os.rename(staged, target)
    return _from_manifest(target, manifest)


def import_files(source: Path, fmt: str, *, parameters: int | None = None, bits_per_weight: float | None = None,
                 metadata: dict | None = None, files: list[Path] | None = None) -> Artifact:
    """An artifact of checkpoint files made elsewhere, by symlink. `source` is a directory (its
    non-hidden files) or, for gguf, one .gguf file."""
    source = source.resolve()
    with staging("import") as staged:
        if source.is_file():
            os.symlink(source, staged / GGUF_FILE)
        else:
            for path in files if files is not None else _content_files(source):
                link = staged / path.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path.resolve(), link)
        return commit(staged, fmt, parameters=parameters, bits_per_weight=bits_per_weight,
                      metadata={"imported_from": str(source), **(metadata or {})})


def is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _from_manifest(path: Path, manifest: dict) -> Artifact:
    return Artifact(artifact_id=manifest["artifact_id"], path=path, format=manifest["format"], bytes=int(manifest["bytes"]),
                    parameters=manifest.get("parameters"), bits_per_weight=manifest.get("bits_per_weight"),
                    metadata=manifest.get("metadata") or {})


def resolve_id(ref: str) -> str:
    """The full artifact id of an id or a unique prefix of at least MIN_PREFIX hex digits."""
    ref = ref.strip().lower()
    if len(ref) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in ref):
        raise UsageError(f"bad artifact id {ref!r}: expected at least {MIN_PREFIX} hex digits of an id `harness lineage` shows")
    root = artifacts_root()
    found = sorted(p.name for p in root.glob(f"{ref}*") if is_complete(p)) if root.is_dir() else []
    if not found:
        raise UsageError(f"no artifact {ref} in {root}")
    if len(found) > 1:
        raise UsageError(f"artifact id {ref} is ambiguous: {', '.join(f[:12] for f in found[:5])}")
    return found[0]


def load(ref: str) -> Artifact:
    """The stored artifact with this id (or unique prefix); UsageError if absent or broken."""
    artifact_id = resolve_id(ref)
    path = artifacts_root() / artifact_id
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"artifact {artifact_id[:12]} has an unreadable {MANIFEST}: {error}") from None
    for link in _content_files(path):
        if not link.exists():
            raise UsageError(f"artifact {artifact_id[:12]} is broken: {link.name} points to {os.readlink(link)}, which is gone")
    return _from_manifest(path, manifest)
