"""A task YAML's merged config, checked and turned into a `TaskSpec` (no data is read here).

This is the part of lm-eval's `TaskConfig.__post_init__` and `ConfigurableTask.__init__` that
decides what a task *is*: splits, prompt fields, few-shot settings, metrics, filters and
generation settings. Everything harness cannot reproduce exactly is a `YamlRefusal` naming the
file and the key, so `harness tasks` can list it with its reason and `harness run` exits 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.task import Aggregation
from harness.scoring.filters import StepPipeline, check_filter
from harness.taskkit.lm_eval_yaml import functions as fnmod
from harness.taskkit.lm_eval_yaml.jinja import Field, check_syntax
from harness.taskkit.lm_eval_yaml.parse import FunctionRef, LoadedYaml, YamlRefusal

OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")
# lm_eval/api/registry.py:DEFAULT_METRIC_REGISTRY
DEFAULT_METRICS = {"loglikelihood": ("perplexity", "acc"), "multiple_choice": ("acc", "acc_norm"),
                   "generate_until": ("exact_match",),
                   "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte")}
MC, LL, GEN, ROLLING = "multiple_choice", "loglikelihood", "generate_until", "loglikelihood_rolling"


@dataclass(frozen=True)
class MetricInfo:
    """A metric of lm_eval/api/metrics.py's registry that harness computes: the output types whose
    process_results produce it, its aggregation (harness.scoring.corpus for all but the mean) and
    its `higher_is_better` default."""

    output_types: frozenset[str]
    aggregation: Aggregation
    higher_is_better: bool = True


def _info(types: str, aggregation: Aggregation, higher_is_better: bool = True) -> MetricInfo:
    return MetricInfo(frozenset(types.split()), aggregation, higher_is_better)


METRICS = {
    "acc": _info(f"{MC} {LL}", "mean"), "acc_norm": _info(MC, "mean"), "acc_bytes": _info(MC, "mean"),
    "exact_match": _info(f"{MC} {GEN}", "mean"), "perplexity": _info(LL, "perplexity", False),
    "word_perplexity": _info(ROLLING, "weighted_perplexity", False),
    "byte_perplexity": _info(ROLLING, "weighted_perplexity", False), "bits_per_byte": _info(ROLLING, "bits_per_byte", False),
    "f1": _info(MC, "f1"), "mcc": _info(MC, "matthews_corrcoef"), "brier_score": _info(MC, "brier_score", False),
    "bleu": _info(GEN, "bleu"), "chrf": _info(GEN, "chrf"), "chrf++": _info(GEN, "chrf++"), "ter": _info(GEN, "ter", False),
}
EXACT_MATCH_ARGS = {"regexes_to_ignore", "ignore_case", "ignore_punctuation", "ignore_numbers"}
GENERATION_ARGS = {"until", "max_gen_toks", "do_sample", "temperature"}
HUB_KWARGS = {"revision", "trust_remote_code"}
LOCAL_BUILDERS = ("json", "csv", "parquet")
DEFAULT_MAX_GEN_TOKS = 256  # lm_eval/defaults.py

# TaskConfig fields (lm_eval/config/task.py) and what harness does with the ones it does not use.
IGNORED = {"task_alias": "display alias ignored", "should_decontaminate": "decontamination is not run (ignored)",
           "doc_to_decontamination_query": "decontamination is not run (ignored)"}
UNSUPPORTED = {"doc_to_image": "multimodal tasks are not supported", "doc_to_audio": "multimodal tasks are not supported",
               "process_results": "custom process_results is not supported", "use_prompt": "promptsource prompts are not supported",
               "custom_dataset": "custom_dataset is not supported", "unsafe_code": "tasks that execute code are not supported"}
KNOWN = {"task", "tag", "group", "task_list", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
         "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text", "doc_to_target", "doc_to_choice",
         "description", "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot", "metric_list", "output_type",
         "generation_kwargs", "repeats", "filter_list", "gen_prefix", "metadata", *IGNORED, *UNSUPPORTED}
FEWSHOT_KEYS = {"sampler", "split", "process_docs", "samples", "doc_to_text", "doc_to_choice", "doc_to_target", "gen_prefix",
                "fewshot_delimiter", "target_delimiter", "fewshot_indices"}
FIELD_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice")


@dataclass(frozen=True)
class MetricConfig:
    name: str
    kwargs: dict
    higher_is_better: bool = True
    aggregation: Aggregation = "mean"


@dataclass(frozen=True)
class DataConfig:
    """Where the documents come from and which splits serve which purpose (lm-eval's names)."""

    path: str
    name: str | None
    kwargs: dict
    training_split: str | None
    validation_split: str | None
    test_split: str | None
    process_docs: Callable[[list[dict]], list[dict]] | None
    base_dir: Path

    def eval_split(self) -> str:
        """`Task.eval_docs`: the test split, else the validation split."""
        return self.test_split or self.validation_split  # type: ignore[return-value]


@dataclass(frozen=True)
class FewshotSpec:
    """`FewshotConfig` after `from_dict`: every formatting field defaults to the task's."""

    sampler: str  # "default" (lm-eval's ContextSampler, our RandomSampler) | "first_n"
    split: str | None
    samples: list[dict] | None
    process_docs: Callable[[list[dict]], list[dict]] | None
    doc_to_text: Field
    doc_to_target: Field
    doc_to_choice: Field | None
    target_delimiter: str
    fewshot_delimiter: str
    gen_prefix: str | None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    source: Path
    content_hash: str
    version: str  # metadata.version, or lm-eval's "Yaml" when there is none
    output_type: str
    data: DataConfig
    doc_to_text: Field
    doc_to_target: Field
    doc_to_choice: Field | None
    fewshot: FewshotSpec
    description: str
    target_delimiter: str
    fewshot_delimiter: str
    gen_prefix: str | None
    num_fewshot: int
    metrics: tuple[MetricConfig, ...]
    filters: tuple[StepPipeline, ...]
    stop: tuple[str, ...] = ()
    max_tokens: int = DEFAULT_MAX_GEN_TOKS
    temperature: float = 0.0
    repeats: int = 1
    tags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # a ported `process_results: !function` (loglikelihood_rolling only): (doc, (ll,)) -> {metric: item}
    process_results: Callable[[dict, tuple], dict] | None = None

    @property
    def harness_version(self) -> str:
        """The version recorded with a run: lm-eval's version plus the hash of the YAML and its includes."""
        return f"{self.version}+yaml.{self.content_hash[:12]}"


class _Checker:
    """Reads one config, raising YamlRefusal(file, key, reason) for the first problem."""

    def __init__(self, loaded: LoadedYaml, functions: fnmod.FunctionTable) -> None:
        self.loaded, self.cfg, self.functions = loaded, loaded.config, functions
        self.path = loaded.path

    def refuse(self, key: str | None, reason: str) -> YamlRefusal:
        return YamlRefusal(self.path, key, reason)

    def function(self, key: str, value: Any, kind: fnmod.FunctionKind) -> Any:
        if not isinstance(value, FunctionRef):
            return value
        ported = fnmod.resolve(value, kind, self.functions)
        if isinstance(ported, str):
            raise self.refuse(key, ported)
        return ported.fn

    def typed(self, key: str, value: Any, types: tuple[type, ...], what: str) -> Any:
        if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            raise self.refuse(key, f"expected {what}, got {value!r}"[:200])
        return value

    def field(self, key: str, value: Any, has_choices: bool) -> Field:
        value = self.function(key, value, "doc")
        if isinstance(value, str):
            error = check_syntax(value)
            if error:
                raise self.refuse(key, error)
        elif value is not None and not isinstance(value, (int, list, dict)) and not callable(value):
            raise self.refuse(key, f"unsupported value {value!r}"[:200])
        return Field(value, frozenset(), has_choices)

    def template(self, key: str, value: Any) -> str | None:
        value = self.typed(key, value, (str,), "a string")
        if value:
            error = check_syntax(value)
            if error:
                raise self.refuse(key, error)
        return value

    def nested_functions(self, key: str, value: Any) -> None:
        """A !function anywhere else (metric, aggregation, filter, samples) is refused."""
        if isinstance(value, FunctionRef):
            raise self.refuse(key, f"!function {value.spec} is not supported here")
        if isinstance(value, dict):
            for k, v in value.items():
                self.nested_functions(f"{key}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.nested_functions(f"{key}[{i}]", v)


def _metrics(c: _Checker, output_type: str) -> tuple[MetricConfig, ...]:
    raw = c.cfg.get("metric_list")
    if raw is None:
        raw = [{"metric": m} for m in DEFAULT_METRICS[output_type]]
    if not isinstance(raw, list):
        raise c.refuse("metric_list", "expected a list")
    out = []
    for i, entry in enumerate(raw):
        key = f"metric_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            raise c.refuse(key, "expected a mapping with a metric name")
        name = entry["metric"]
        if entry.get("hf_evaluate"):
            raise c.refuse(key, f"HF evaluate metric {name} is not supported")
        info = METRICS.get(name)
        if info is None or output_type not in info.output_types:
            raise c.refuse(key, f"unknown metric {name} for {output_type}")
        agg = entry.get("aggregation", info.aggregation)
        if agg != info.aggregation:
            raise c.refuse(f"{key}.aggregation", f"aggregation {agg!r} is not supported for {name} ({info.aggregation} only)")
        kwargs = {k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better", "hf_evaluate")}
        # lm-eval passes metric options only to generate_until metrics (process_results ignores them otherwise),
        # and a corpus metric's passthrough function takes none (lm-eval retries it without them)
        kwargs = kwargs if output_type == GEN and name == "exact_match" else {}
        if set(kwargs) - EXACT_MATCH_ARGS:
            raise c.refuse(key, f"metric {name} has no option {', '.join(sorted(set(kwargs) - EXACT_MATCH_ARGS))}")
        out.append(MetricConfig(name, kwargs, bool(entry.get("higher_is_better", info.higher_is_better)), info.aggregation))
    if not out:
        raise c.refuse("metric_list", "no metrics")
    return tuple(out)


def _filters(c: _Checker) -> tuple[StepPipeline, ...]:
    raw = c.cfg.get("filter_list")
    if raw is None:
        return (StepPipeline("none", (("take_first", {}),)),)
    if not isinstance(raw, list):
        raise c.refuse("filter_list", "expected a list of {name, filter}")
    out = []
    for i, entry in enumerate(raw):
        key = f"filter_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filter"), list) or "name" not in entry:
            raise c.refuse(key, "expected a mapping with name and a filter list")
        steps = []
        for j, step in enumerate(entry["filter"]):
            if not isinstance(step, dict) or not isinstance(step.get("function"), str):
                raise c.refuse(f"{key}.filter[{j}]", "expected a mapping with a function name")
            kwargs = {k: v for k, v in step.items() if k != "function"}
            reason = check_filter(step["function"], kwargs)
            if reason:
                raise c.refuse(f"{key}.filter[{j}]", reason)
            steps.append((step["function"], kwargs))
        if not steps or steps[-1][0] != "take_first":
            raise c.refuse(key, "a filter pipeline must end with take_first (harness scores one answer per document)")
        out.append(StepPipeline(str(entry["name"]), tuple(steps)))
    return tuple(out)


def _data(c: _Checker) -> DataConfig:
    path = c.typed("dataset_path", c.cfg.get("dataset_path"), (str,), "a dataset id or json|csv|parquet")
    if not path:
        raise c.refuse("dataset_path", "missing")
    kwargs = c.typed("dataset_kwargs", c.cfg.get("dataset_kwargs"), (dict,), "a mapping") or {}
    if path in LOCAL_BUILDERS:
        if "data_files" not in kwargs:
            raise c.refuse("dataset_kwargs.data_files", f"dataset_path {path} needs data_files")
        extra = set()  # every other key goes to datasets.load_dataset, as lm-eval passes it
    else:
        extra = set(kwargs) - HUB_KWARGS
    if extra:
        raise c.refuse("dataset_kwargs", f"{', '.join(sorted(extra))} not supported for dataset_path {path}")
    splits = {k: c.typed(k, c.cfg.get(k), (str,), "a split name") for k in ("training_split", "validation_split", "test_split")}
    if not splits["test_split"] and not splits["validation_split"]:
        raise c.refuse("test_split", "neither test_split nor validation_split is set")
    name = c.cfg.get("dataset_name")
    return DataConfig(path, None if name is None else str(name), kwargs, splits["training_split"], splits["validation_split"],
                      splits["test_split"], c.function("process_docs", c.cfg.get("process_docs"), "process_docs"),
                      c.path.parent)


def _fewshot(c: _Checker, text: Field, target: Field, choice: Field | None, delims: tuple[str, str, str | None]) -> FewshotSpec:
    raw = c.typed("fewshot_config", c.cfg.get("fewshot_config"), (dict,), "a mapping") or {}
    extra = set(raw) - FEWSHOT_KEYS
    if extra:
        raise c.refuse("fewshot_config", f"unknown key {', '.join(sorted(extra))}")
    sampler = raw.get("sampler", "default")
    if sampler not in ("default", "first_n"):
        raise c.refuse("fewshot_config.sampler", f"sampler {sampler!r} is not supported (default, first_n)")
    if raw.get("fewshot_indices") is not None:
        raise c.refuse("fewshot_config.fewshot_indices", "not supported")
    samples = raw.get("samples")
    if samples is not None and not (isinstance(samples, list) and all(isinstance(s, dict) for s in samples)):
        raise c.refuse("fewshot_config.samples", "expected an inline list of documents" if not isinstance(samples, FunctionRef)
                       else f"!function {samples.spec} is not supported here")
    has_choices = choice is not None

    def override(key: str, default: Field | None) -> Field | None:
        return c.field(f"fewshot_config.{key}", raw[key], has_choices) if raw.get(key) is not None else default

    shot_text, shot_target = override("doc_to_text", text), override("doc_to_target", target)
    process = c.function("fewshot_config.process_docs", raw["process_docs"], "process_docs") \
        if raw.get("process_docs") is not None else c.function("process_docs", c.cfg.get("process_docs"), "process_docs")
    fs_split = raw.get("split") if raw.get("split") is not None else c.cfg.get("fewshot_split")
    return FewshotSpec(sampler, fs_split, samples, process, shot_text or text, shot_target or target,
                       override("doc_to_choice", choice), str(raw.get("target_delimiter", delims[0])),
                       str(raw.get("fewshot_delimiter", delims[1])), c.template("fewshot_config.gen_prefix",
                                                                                raw.get("gen_prefix", delims[2])))


def _generation(c: _Checker, fewshot_delimiter: str) -> tuple[tuple[str, ...], int, float]:
    """TaskConfig.__post_init__'s generation defaults, mapped onto our Generate request."""
    gk = c.typed("generation_kwargs", c.cfg.get("generation_kwargs"), (dict,), "a mapping")
    gk = {"until": [fewshot_delimiter], "do_sample": False, "temperature": 0.0} if gk is None else dict(gk)
    extra = set(gk) - GENERATION_ARGS
    if extra:
        raise c.refuse("generation_kwargs", f"{', '.join(sorted(extra))} not supported (until, max_gen_toks, do_sample, temperature)")
    until = gk.get("until", [fewshot_delimiter])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise c.refuse("generation_kwargs.until", "expected a string or a list of strings")
    max_tokens = c.typed("generation_kwargs.max_gen_toks", gk.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS), (int,), "an integer")
    temperature = c.typed("generation_kwargs.temperature", gk.get("temperature", 0.0), (int, float), "a number")
    greedy = gk.get("do_sample") is False or float(temperature) == 0.0
    return tuple(until), int(max_tokens), 0.0 if greedy else float(temperature)


def _process_results(c: _Checker, output_type: str) -> Callable[[dict, tuple], dict] | None:
    """A `process_results: !function` ported in the function table (for loglikelihood_rolling), else None
    (any other process_results is refused as UNSUPPORTED says)."""
    value = c.cfg.get("process_results")
    if not isinstance(value, FunctionRef) or output_type != ROLLING:
        return None
    ported = fnmod.resolve(value, "process_results", c.functions)
    return None if isinstance(ported, str) else ported.fn


def task_spec(loaded: LoadedYaml, functions: fnmod.FunctionTable, name: str | None = None) -> TaskSpec:
    """The checked TaskSpec of a task YAML (its merged config); `name` overrides the registered name."""
    c = _Checker(loaded, functions)
    cfg = c.cfg
    for key in cfg:
        if key not in KNOWN:
            raise c.refuse(key, "unknown key (lm-eval's TaskConfig has no such field)")
    output_type = cfg.get("output_type", "generate_until")
    process_results = _process_results(c, output_type)
    for key, reason in UNSUPPORTED.items():
        if cfg.get(key) not in (None, False) and not (key == "process_results" and process_results is not None):
            raise c.refuse(key, reason)
    if output_type not in OUTPUT_TYPES:
        raise c.refuse("output_type", f"{output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
    for key in ("metric_list", "filter_list", "generation_kwargs", "dataset_kwargs", "metadata"):
        c.nested_functions(key, cfg.get(key))
    has_choices = cfg.get("doc_to_choice") is not None
    text = c.field("doc_to_text", cfg.get("doc_to_text"), has_choices)
    target = c.field("doc_to_target", cfg.get("doc_to_target"), has_choices)
    choice = c.field("doc_to_choice", cfg["doc_to_choice"], True) if has_choices else None
    if text.value is None or target.value is None:
        raise c.refuse("doc_to_text" if text.value is None else "doc_to_target", "missing")
    if output_type == "multiple_choice" and choice is None:
        raise c.refuse("doc_to_choice", "multiple_choice needs doc_to_choice")
    description = c.template("description", cfg.get("description", "")) or ""
    target_delimiter = c.typed("target_delimiter", cfg.get("target_delimiter", " "), (str,), "a string")
    fewshot_delimiter = c.typed("fewshot_delimiter", cfg.get("fewshot_delimiter", "\n\n"), (str,), "a string")
    gen_prefix = c.template("gen_prefix", cfg.get("gen_prefix"))
    num_fewshot = c.typed("num_fewshot", cfg.get("num_fewshot"), (int,), "an integer") or 0
    repeats = c.typed("repeats", cfg.get("repeats", 1), (int,), "an integer")
    if repeats < 1 or (repeats != 1 and output_type != "generate_until"):
        raise c.refuse("repeats", f"repeats {repeats} is supported for generate_until only (and must be >= 1)")
    stop, max_tokens, temperature = _generation(c, fewshot_delimiter) if output_type == "generate_until" else ((), 0, 0.0)
    metadata = c.typed("metadata", cfg.get("metadata"), (dict,), "a mapping") or {}
    tags = cfg.get("tag") or ()
    notes = tuple(f"{k}: {IGNORED[k]}" for k in IGNORED if cfg.get(k))
    return TaskSpec(
        name=name or str(cfg["task"]), source=loaded.path, content_hash=loaded.content_hash,
        version=str(metadata["version"]) if "version" in metadata else "Yaml", output_type=output_type, data=_data(c),
        doc_to_text=text, doc_to_target=target, doc_to_choice=choice,
        fewshot=_fewshot(c, text, target, choice, (target_delimiter, fewshot_delimiter, gen_prefix)),
        description=description, target_delimiter=target_delimiter, fewshot_delimiter=fewshot_delimiter,
        gen_prefix=gen_prefix, num_fewshot=num_fewshot, metrics=_metrics(c, output_type),
        filters=_filters(c) if output_type == "generate_until" else (), stop=stop, max_tokens=max_tokens,
        temperature=temperature, repeats=repeats, tags=tuple([tags] if isinstance(tags, str) else tags), notes=notes,
        process_results=process_results,
    )
