"""The documents of a YAML task: its splits, `process_docs`, and the few-shot pool.

- `dataset_path: json|csv|parquet` with `dataset_kwargs.data_files` reads local files through
  `datasets.load_dataset(builder, data_files=...)`, exactly as lm-eval does (so column types are
  the same). A relative data file is looked up beside the YAML first, then (lm-eval's rule)
  relative to the working directory.
- Any other `dataset_path` is a hub dataset read through `harness.taskkit.data.load`: the hub
  (or `HARNESS_HUB_MIRROR=<dir>`, holding `<dir>/<dataset_path>` as a dataset directory that
  `datasets.load_dataset(dir, dataset_name, split=...)` reads), else a `HARNESS_DATA_DIR` mirror
  or the fixtures laid out as `<root>/<dataset_path>/<dataset_name>/<split>.jsonl`
  (`<dataset_path>/<split>.jsonl` without a dataset_name). Rows are in hub schema.

Splits follow `ConfigurableTask`: evaluation documents are the test split, else the validation
split; few-shot documents are `fewshot_config.split` / `fewshot_split`, else inline
`fewshot_config.samples`, else the training, validation or test split (`Task.fewshot_docs`),
each passed through the (ported) `process_docs` where lm-eval applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.core.hashing import sha256_json
from harness.core.task import Dataset
from harness.taskkit import data, files
from harness.taskkit.lm_eval_yaml.spec import LOCAL_BUILDERS, DataConfig, TaskSpec

SplitReader = Callable[[str], list[dict]]


def _local_file(base_dir: Path, name: str) -> str:
    path = Path(name).expanduser()
    if path.is_absolute():
        found = path
    elif (base_dir / path).exists():
        found = base_dir / path
    else:
        found = Path.cwd() / path
    if not found.exists():
        raise UsageError(f"data file {name} not found (looked beside the YAML in {base_dir} and in {Path.cwd()})")
    return str(found)


def _data_files(cfg: DataConfig) -> dict[str, list[str]]:
    raw = cfg.kwargs["data_files"]
    by_split = raw if isinstance(raw, dict) else {"train": raw}
    return {str(split): [_local_file(cfg.base_dir, f) for f in ([names] if isinstance(names, str) else names)]
            for split, names in by_split.items()}


def _local_reader(cfg: DataConfig) -> SplitReader:
    import datasets  # heavy: only when a task's documents are read

    options = {k: v for k, v in cfg.kwargs.items() if k not in ("data_files", "trust_remote_code")}
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # stderr stays one line per error
    try:
        loaded = datasets.load_dataset(cfg.path, data_files=_data_files(cfg), **options)
    except (ValueError, OSError) as exc:
        raise UsageError(f"dataset {cfg.path} {cfg.kwargs['data_files']}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    finally:
        if shown:
            datasets.enable_progress_bars()

    def read(split: str) -> list[dict]:
        if split not in loaded:
            raise UsageError(f"dataset {cfg.path}: no split {split!r} in data_files (have {', '.join(loaded)})")
        return [dict(row) for row in loaded[split]]

    return read


def _mirror_reader(root: Path, cfg: DataConfig) -> SplitReader:
    folder = root / cfg.path / (cfg.name or "")

    def read(split: str) -> list[dict]:
        return files.read_jsonl(folder / f"{split}.jsonl")

    return read


def _splits(spec: TaskSpec, read: SplitReader) -> tuple[list[dict], list[dict]]:
    """(evaluation docs, few-shot docs) as ConfigurableTask's eval_docs and fewshot_docs give them."""
    cfg = spec.data

    def processed(split: str, process: Callable[[list[dict]], list[dict]] | None) -> list[dict]:
        rows = read(split)
        return process(rows) if process is not None else rows

    docs = processed(cfg.eval_split(), cfg.process_docs)
    fs = spec.fewshot
    if fs.split is not None:
        pool = processed(fs.split, fs.process_docs)
    elif fs.samples is not None:
        pool = list(fs.samples)
    else:
        fallback = cfg.training_split or cfg.validation_split or cfg.test_split
        pool = docs if fallback == cfg.eval_split() else processed(fallback, cfg.process_docs)  # type: ignore[arg-type]
    return docs, pool


def _dataset(docs: list[dict], pool: list[dict], source: str) -> Dataset:
    if not docs:
        raise UsageError(f"no documents found in {source}")
    return Dataset(docs=docs, fewshot_docs=pool, source=source, fingerprint=sha256_json([docs, pool]))


def load(spec: TaskSpec) -> Dataset:
    """The task's Dataset, read from local files or through harness's hub / mirror / fixture sources."""
    cfg = spec.data
    if cfg.path in LOCAL_BUILDERS:
        docs, pool = _splits(spec, _local_reader(cfg))
        return _dataset(docs, pool, f"{cfg.path}:{','.join(f for fs in _data_files(cfg).values() for f in fs)}")
    revision = str(cfg.kwargs.get("revision") or "main")
    hub = data.HubSpec(cfg.path, revision, name=cfg.name)

    def hub_loader(load_split: Callable[..., Any]) -> tuple[list[dict], list[dict]]:
        return _splits(spec, lambda split: [dict(r) for r in load_split(split)])

    def dir_loader(root: Path) -> tuple[list[dict], list[dict]]:
        return _splits(spec, _mirror_reader(root, cfg))

    key = f"{spec.name}@yaml.{spec.content_hash[:12]}"
    return data.load(key, dir_loader=dir_loader, hub=hub, hub_loader=hub_loader)
