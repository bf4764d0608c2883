"""Where a task's documents come from, in order: a local mirror, the Hugging Face hub, the fixture.

- `HARNESS_DATA_DIR` (a mirror laid out like `../shared/data`) wins when set; files missing
  there are an error, never a silent fall-back.
- Otherwise the hub, through `datasets`, at a pinned dataset id and revision. `HARNESS_HUB_MIRROR`
  points the same code at a local directory holding `<dataset_id>/...` (how it is tested here);
  `HF_HUB_OFFLINE=1` or `HF_DATASETS_OFFLINE=1` skips the hub.
- Otherwise the committed fixture (a small attributed subset) with a warning saying so.

`HARNESS_DATA_SOURCE=mirror|hub|fixture` (or a suite's `data:` key) forces one source.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.resources import package_dir
from harness.core.task import Dataset

log = logging.getLogger("harness.data")

FIXTURE_DIR = package_dir("harness.tasks") / "fixtures"
SOURCES = ("auto", "mirror", "hub", "fixture")
HUB_PROBE_TIMEOUT_S = 3.0
_forced: list[str] = []


@dataclass(frozen=True)
class HubSpec:
    dataset_id: str
    revision: str
    name: str | None = None


# A loader reads (docs, fewshot_docs) from a directory laid out like ../shared/data.
DirLoader = Callable[[Path], tuple[list[dict], list[dict]]]
# A hub loader reads (docs, fewshot_docs) given a `datasets.load_dataset` callable.
HubLoader = Callable[[Callable[..., object]], tuple[list[dict], list[dict]]]


@contextmanager
def forced_source(source: str | None) -> Iterator[None]:
    """Force one data source for the tasks loaded inside (a suite's `data:` key)."""
    if source is not None and source not in SOURCES:
        raise UsageError(f"unknown data source {source!r}: expected one of {', '.join(SOURCES)}")
    _forced.append(source or "auto")
    try:
        yield
    finally:
        _forced.pop()


def _wanted_source() -> str:
    env = os.environ.get("HARNESS_DATA_SOURCE")
    if env and env not in SOURCES:
        raise UsageError(f"HARNESS_DATA_SOURCE={env!r}: expected one of {', '.join(SOURCES)}")
    if _forced and _forced[-1] != "auto":
        return _forced[-1]
    return env or "auto"


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.cache
def hub_reachable(endpoint: str | None = None) -> bool:
    """One quick TCP connect per process: without it an offline machine waits on the
    hub's retries for every task (24 s each, measured; 57 MMLU subjects would take 23 min)."""
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        log.warning("the Hugging Face hub (%s) is unreachable; using mirrors or fixtures", url.hostname)
        return False


def _hub_usable(hub: HubSpec | None) -> bool:
    if hub is None:
        return False
    if os.environ.get("HARNESS_HUB_MIRROR"):
        return True
    return not _hub_offline() and hub_reachable()


def _make(docs: list[dict], fewshot: list[dict], source: str) -> Dataset:
    if not docs:
        raise UsageError(f"no documents found in {source}")
    return Dataset(docs=docs, fewshot_docs=fewshot, source=source, fingerprint=sha256_json([docs, fewshot]))


def _from_dir(task: str, root: Path, loader: DirLoader, label: str) -> Dataset:
    try:
        docs, fewshot = loader(root)
    except FileNotFoundError as exc:
        raise UsageError(f"missing dataset for {task}: {exc.filename or exc} not found under {label} {root}") from None
    return _make(docs, fewshot, f"{label}:{root}")


def _from_hub(spec: HubSpec, loader: HubLoader) -> Dataset:
    import datasets  # heavy: imported only when the hub is used

    mirror = os.environ.get("HARNESS_HUB_MIRROR")
    path = str(Path(mirror) / spec.dataset_id) if mirror else spec.dataset_id

    def load(split: str, name: str | None = spec.name) -> object:
        return datasets.load_dataset(path, name, split=split, revision=None if mirror else spec.revision)

    docs, fewshot = loader(load)
    return _make(docs, fewshot, f"hub:{spec.dataset_id}@{spec.revision}")


_SOURCE_ENV = ("HARNESS_DATA_SOURCE", "HARNESS_DATA_DIR", "HARNESS_HUB_MIRROR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_CACHE: dict[tuple, Dataset] = {}


def source_key() -> tuple:
    """Everything that decides which source `load` picks, so a memoised Dataset is never stale."""
    return tuple(os.environ.get(v) for v in _SOURCE_ENV) + (_forced[-1] if _forced else "auto",)


def clear_cache() -> None:
    _CACHE.clear()


def load(task: str, *, dir_loader: DirLoader, hub: HubSpec | None, hub_loader: HubLoader | None) -> Dataset:
    """Load one task's documents from the first source that has them, once per process and source."""
    key = (task, source_key())
    if key not in _CACHE:
        _CACHE[key] = _load(task, dir_loader, hub, hub_loader)
    return _CACHE[key]


def _load(task: str, dir_loader: DirLoader, hub: HubSpec | None, hub_loader: HubLoader | None) -> Dataset:
    wanted = _wanted_source()
    data_dir = os.environ.get("HARNESS_DATA_DIR")
    if wanted == "mirror" or (wanted == "auto" and data_dir):
        if not data_dir:
            raise UsageError(f"missing dataset for {task}: data source 'mirror' needs HARNESS_DATA_DIR")
        root = Path(data_dir)
        if not root.is_dir():
            raise UsageError(f"HARNESS_DATA_DIR={data_dir} is not a directory")
        return _from_dir(task, root, dir_loader, "mirror")
    if wanted == "hub" or (wanted == "auto" and _hub_usable(hub)):
        if hub is None or hub_loader is None:
            raise UsageError(f"missing dataset for {task}: it has no hub source")
        try:
            return _from_hub(hub, hub_loader)
        except UsageError:
            raise
        except Exception as exc:  # network, auth, missing revision: fall back, but say so
            if wanted == "hub":
                raise UsageError(f"missing dataset for {task}: hub {hub.dataset_id}@{hub.revision}: {exc}") from None
            log.warning("%s: hub %s unavailable (%s); falling back to the fixture", task, hub.dataset_id, type(exc).__name__)
    dataset = _from_dir(task, FIXTURE_DIR, dir_loader, "fixture")
    if wanted == "auto":
        log.warning("%s: using the committed fixture (%d documents), not the full dataset", task, len(dataset.docs))
    return dataset
