"""A `Task` value from a `TaskSpec`: requests and scores as lm-eval's `ConfigurableTask` makes them.

- prompts: `ConfigurableTask.fewshot_context` + `build_qa_turn` without a chat template:
  description (a key of the doc or a template), then per shot `text + target_delimiter + answer
  + fewshot_delimiter` (the answer is `choices[target]` for an int target, the first of a list
  target; gen_prefix joined as `maybe_delimit` does), then the document's text (+ gen_prefix);
- requests: `construct_requests`: multiple_choice -> one Loglikelihood(ctx, target_delimiter +
  choice) per choice; loglikelihood -> Loglikelihood(ctx, target); generate_until -> one
  Generate(ctx, stop=until, max_tokens=max_gen_toks, temperature, n=repeats); loglikelihood_rolling ->
  LoglikelihoodRolling(target), no context;
- scores: `process_results`: acc / acc_norm (by characters) / acc_bytes / exact_match
  (is_greedy of the gold choice) for multiple choice, acc (is_greedy) for loglikelihood, and for
  generation each filter pipeline then exact_match with the metric's options, reported as
  `"<metric>,<filter>"`; corpus metrics (perplexity, word/byte perplexity, bits_per_byte, f1, mcc,
  brier_score, bleu, chrf, chrf++, ter) store lm-eval's per-document item, which
  `harness.scoring.corpus` aggregates.

The few-shot sampler is lm-eval's (`harness.taskkit.fewshot`): one sampler per build, seeded with
the run seed, drawing in document order; the evaluated doc is excluded when the few-shot split
equals the test split (both unset counts, as in lm-eval). As harness's native generate tasks,
generations are cut at the stop sequences before filtering. Not supported (an error naming the
file and key when met): multiple-input tasks (doc_to_text giving a choice index).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling, Request, Response
from harness.core.task import Dataset, Instance, MetricSpec, ScoreContext, Scored, Task
from harness.scoring.filters import ExactMatchOptions, exact_match, truncate_at_stop
from harness.taskkit.fewshot import make_sampler
from harness.taskkit.formats import _argmax, _divide  # numpy's argmax and division, shared with native tasks
from harness.taskkit.lm_eval_yaml import source
from harness.taskkit.lm_eval_yaml.jinja import Field, FieldError, resolve_field
from harness.taskkit.lm_eval_yaml.parse import YamlRefusal
from harness.taskkit.lm_eval_yaml.spec import MetricConfig, TaskSpec


def _call(spec: TaskSpec, key: str, fn: Callable[[dict], Any], doc: dict) -> Any:
    """A prompt field evaluated on a doc; its failure names the YAML file and the key."""
    try:
        return fn(doc)
    except FieldError as exc:
        raise YamlRefusal(spec.source, key, str(exc)) from None
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise YamlRefusal(spec.source, key, f"{type(exc).__name__}: {exc}") from None


def _maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    """lm_eval/api/utils.py:maybe_delimit."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix or ""
    return prefix + delimiter + suffix if not (prefix[-1].isspace() or suffix[0].isspace()) else prefix + suffix


def _requires_delimiter(prefix: str, suffix: str) -> bool:
    """lm_eval/api/utils.py:requires_delimiter."""
    return prefix != "" and not (prefix[-1].isspace() or suffix[0].isspace())


def qa_turn(q: Any, c: list | None, a: Any, gen_prefix: str | None, tgt_delim: str, few_delim: str) -> str:
    """`ConfigurableTask.build_qa_turn` rendered as plain text."""
    if not isinstance(q, str):
        raise FieldError(f"doc_to_text gave {type(q).__name__}, not text (multiple-input tasks are not supported)")
    has_answer = a is not None and a != ""
    if has_answer and not gen_prefix:
        user_delim = tgt_delim
    else:
        user_delim = tgt_delim if gen_prefix and _requires_delimiter(q, gen_prefix) else ""
    text = q + user_delim
    if has_answer:
        answer = c[a] if (c and isinstance(a, int)) else a[0] if isinstance(a, list) else a
        if not isinstance(answer, str):
            raise FieldError(f"the few-shot answer is {answer!r}, not text")
        return text + _maybe_delimit(gen_prefix, answer, " ") + few_delim
    return text + (gen_prefix or "")


def _shot_turn(q: Any, c: list | None, a: Any, gen_prefix: str | None, tgt_delim: str, few_delim: str, _doc: dict) -> str:
    return qa_turn(q, c, a, gen_prefix, tgt_delim, few_delim)


def _features(spec: TaskSpec, dataset: Dataset) -> dict[str, Field | None]:
    keys = frozenset(dataset.docs[0]) if dataset.docs else frozenset()
    fs = spec.fewshot
    fields = {"doc_to_text": spec.doc_to_text, "doc_to_target": spec.doc_to_target, "doc_to_choice": spec.doc_to_choice,
              "fewshot_config.doc_to_text": fs.doc_to_text, "fewshot_config.doc_to_target": fs.doc_to_target,
              "fewshot_config.doc_to_choice": fs.doc_to_choice}
    return {k: (f.with_features(keys) if f is not None else None) for k, f in fields.items()}


def _context(spec: TaskSpec, f: dict[str, Field | None], doc: dict, shots: list[dict]) -> str:
    fs = spec.fewshot
    parts = [_call(spec, "description", lambda d: resolve_field(d, spec.description) or "", doc)]
    for shot in shots:
        q = _call(spec, "fewshot_config.doc_to_text", f["fewshot_config.doc_to_text"].text, shot)  # type: ignore[union-attr]
        shot_choices = f["fewshot_config.doc_to_choice"]
        c = _call(spec, "fewshot_config.doc_to_choice", shot_choices.choices, shot) if shot_choices else None
        a = _call(spec, "fewshot_config.doc_to_target", f["fewshot_config.doc_to_target"].target, shot)  # type: ignore[union-attr]
        prefix = _call(spec, "fewshot_config.gen_prefix", lambda d: resolve_field(d, fs.gen_prefix), shot)
        parts.append(_call(spec, "fewshot_config", partial(_shot_turn, q, c, a, prefix, fs.target_delimiter,
                                                           fs.fewshot_delimiter), shot))
    q = _call(spec, "doc_to_text", f["doc_to_text"].text, doc)  # type: ignore[union-attr]
    prefix = _call(spec, "gen_prefix", lambda d: resolve_field(d, spec.gen_prefix), doc)
    parts.append(_call(spec, "doc_to_text", lambda _: qa_turn(q, None, None, prefix, spec.target_delimiter, ""), doc))
    return "".join(parts)


def _choices(spec: TaskSpec, f: dict[str, Field | None], doc: dict) -> list[str]:
    choices = _call(spec, "doc_to_choice", f["doc_to_choice"].choices, doc)  # type: ignore[union-attr]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise YamlRefusal(spec.source, "doc_to_choice", f"expected a list of strings, got {choices!r}"[:200])
    return choices


def _target_text(target: Any, choices: list[str] | None) -> str:
    if isinstance(target, list):
        target = target[0] if target else ""
    if isinstance(target, int) and choices is not None:
        return choices[target] if 0 <= target < len(choices) else ""
    return str(target)


def _requests(spec: TaskSpec, f: dict[str, Field | None], doc: dict, context: str) -> tuple[tuple[Request, ...], str]:
    target = _call(spec, "doc_to_target", f["doc_to_target"].target, doc)  # type: ignore[union-attr]
    if spec.output_type == "multiple_choice":
        choices = _choices(spec, f, doc)
        return tuple(Loglikelihood(context, spec.target_delimiter + c) for c in choices), _target_text(target, choices)
    if spec.output_type in ("loglikelihood", "loglikelihood_rolling"):
        if not isinstance(target, str):
            raise YamlRefusal(spec.source, "doc_to_target", f"{spec.output_type} needs a text target, got {target!r}"[:200])
        rolling = spec.output_type == "loglikelihood_rolling"  # lm-eval's arguments: (doc_to_target(doc),), no context
        return ((LoglikelihoodRolling(target),) if rolling else (Loglikelihood(context, target),)), target
    gen_choices = _choices(spec, f, doc) if f["doc_to_choice"] is not None else None
    request = Generate(prompt=context, stop=spec.stop, max_tokens=spec.max_tokens, temperature=spec.temperature, n=spec.repeats)
    return (request,), _target_text(target, gen_choices)


def build(spec: TaskSpec, dataset: Dataset, limit: int | None, num_fewshot: int, seed: int) -> list[Instance]:
    """Instances for docs[:limit], shots drawn in document order from one sampler (lm-eval's build_all_requests)."""
    f = _features(spec, dataset)
    docs = dataset.docs if limit is None else dataset.docs[:limit]
    sampler = make_sampler("first_n" if spec.fewshot.sampler == "first_n" else "random", dataset.fewshot_docs, seed)
    exclude = spec.fewshot.split == spec.data.test_split
    instances = []
    rolling = spec.output_type == "loglikelihood_rolling"
    for doc_id, doc in enumerate(docs):
        if rolling:  # the model sees the target text alone; lm-eval builds a context it does not use
            requests, target = _requests(spec, f, doc, "")
            instances.append(Instance(doc_id=doc_id, doc=doc, prompt=target, target=target, requests=requests))
            continue
        shots = sampler.sample(num_fewshot, doc if exclude else None) if num_fewshot > 0 else []
        context = _context(spec, f, doc, shots)
        requests, target = _requests(spec, f, doc, context)
        instances.append(Instance(doc_id=doc_id, doc=doc, prompt=context, target=target, requests=requests))
    return instances


# --- scoring -----------------------------------------------------------------------------------


def _gold_index(gold: Any, choices: list[str]) -> Any:
    """process_results' gold: an index (-100 when out of range), or a list of them."""
    if isinstance(gold, list):
        return [i if i < len(choices) else -100 for i in gold]
    if isinstance(gold, int):
        return gold if gold < len(choices) else -100
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else -100
    return -100


def score_multiple_choice(spec: TaskSpec, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    results = [r if isinstance(r, LoglikelihoodResult) else LoglikelihoodResult(float(r[0]), bool(r[1])) for r in responses]  # type: ignore[index]
    lls, greedy = [r.logprob for r in results], [r.is_greedy for r in results]
    f = {"doc_to_choice": spec.doc_to_choice.with_features(instance.doc) if spec.doc_to_choice else None}
    choices = _choices(spec, f, instance.doc)
    gold = _gold_index(_call(spec, "doc_to_target", spec.doc_to_target.with_features(instance.doc).target, instance.doc), choices)
    preds = {"acc": _argmax(lls), "acc_norm": _argmax([_divide(ll, float(len(c))) for ll, c in zip(lls, choices)]),
             "acc_bytes": _argmax([_divide(ll, float(len(c.encode("utf-8")))) for ll, c in zip(lls, choices)])}
    values: dict[str, Any] = {}
    for m in spec.metrics:
        if m.name in ("f1", "mcc", "brier_score"):
            values[m.name] = _mc_item(spec, m.name, gold, preds["acc"], lls)
        elif m.name == "exact_match":
            hit = any(greedy[i] if i != -100 else 0 for i in gold) if isinstance(gold, list) else (gold != -100 and greedy[gold])
            values[m.name] = float(int(bool(hit)))
        else:
            pred = preds[m.name]
            values[m.name] = 1.0 if (pred in gold if isinstance(gold, list) else pred == gold) else 0.0
    return Scored(metrics=values, response=[[r.logprob, r.is_greedy] for r in results], extracted=choices[preds["acc"]],
                  loglikelihoods=lls)


def _softmax(lls: list[float]) -> list[float]:
    """lm_eval/utils.py:softmax."""
    x = np.asarray(lls, dtype=float)
    e_x = np.exp(x - np.max(x))
    return [float(v) for v in e_x / e_x.sum()]


def _mc_item(spec: TaskSpec, name: str, gold: Any, pred: int, lls: list[float]) -> list:
    """process_results' item for a corpus metric of multiple choice: (gold, pred), or (gold, softmax(lls)) for brier_score."""
    if isinstance(gold, list):
        raise YamlRefusal(spec.source, "doc_to_target", f"metric {name} needs one gold index per document, got {gold!r}"[:200])
    return [int(gold), _softmax(lls) if name == "brier_score" else int(pred)]


def score_loglikelihood(spec: TaskSpec, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    """process_results for loglikelihood: perplexity's item is [ll] (harness.scoring.corpus), acc is is_greedy."""
    r = responses[0]
    result = r if isinstance(r, LoglikelihoodResult) else LoglikelihoodResult(float(r[0]), bool(r[1]))  # type: ignore[index]
    values: dict[str, Any] = {"perplexity": [result.logprob], "acc": float(int(result.is_greedy))}
    return Scored(metrics={m.name: values[m.name] for m in spec.metrics}, response=[[result.logprob, result.is_greedy]],
                  loglikelihoods=[result.logprob])


def count_words(text: str) -> int:
    """lm_eval/api/task.py:ConfigurableTask.count_words."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """lm_eval/api/task.py:ConfigurableTask.count_bytes."""
    return len(text.encode("utf-8"))


def score_rolling(spec: TaskSpec, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    """process_results for loglikelihood_rolling: items [ll, words] / [ll, bytes], or the ported process_results'."""
    ll = float(responses[0])  # type: ignore[arg-type]
    values: dict[str, Any]
    if spec.process_results is not None:
        values = {k: list(v) for k, v in spec.process_results(instance.doc, (ll,)).items()}
    else:
        text = instance.target
        words, nbytes = count_words(text), count_bytes(text)
        values = {"word_perplexity": [ll, words], "byte_perplexity": [ll, nbytes], "bits_per_byte": [ll, nbytes]}
    return Scored(metrics={m.name: values[m.name] for m in spec.metrics if m.name in values}, response=ll,
                  loglikelihoods=[ll])


def _options(metric: MetricConfig) -> ExactMatchOptions:
    kw = metric.kwargs
    return ExactMatchOptions(regexes_to_ignore=tuple(kw.get("regexes_to_ignore") or ()), ignore_case=bool(kw.get("ignore_case")),
                             ignore_punctuation=bool(kw.get("ignore_punctuation")), ignore_numbers=bool(kw.get("ignore_numbers")))


def score_generate(spec: TaskSpec, instance: Instance, responses: list[Response], context: ScoreContext) -> Scored:
    raw = responses[0]
    texts = [raw] if isinstance(raw, str) else [t if isinstance(t, str) else "" for t in raw]  # type: ignore[union-attr]
    texts = [truncate_at_stop(t, spec.stop) for t in texts]
    doc = instance.doc
    gold = _call(spec, "doc_to_target", spec.doc_to_target.with_features(doc).target, doc)
    if spec.doc_to_choice is not None:
        gold = _choices(spec, {"doc_to_choice": spec.doc_to_choice.with_features(doc)}, doc)[gold]
    golds = [str(g) for g in gold] if isinstance(gold, list) else [str(gold)]
    metrics: dict[str, Any] = {}
    extracted: dict[str, Any] = {}
    for pipeline in spec.filters:
        answer = pipeline.apply(texts, doc)
        extracted[pipeline.name] = answer
        for m in spec.metrics:
            key = f"{m.name},{pipeline.name}"
            if m.aggregation != "mean":  # a corpus metric's item: [reference, prediction], lm-eval's [gold, result]
                if isinstance(gold, list):
                    raise YamlRefusal(spec.source, "doc_to_target", f"metric {m.name} needs one reference per document")
                metrics[key] = [str(gold), str(answer)]
                continue
            hits = [exact_match(str(answer), g, _options(m)) for g in golds]
            metrics[key] = 1.0 if any(hits) else 0.0
    response = [raw] if isinstance(raw, str) else list(raw)  # type: ignore[arg-type]
    return Scored(metrics=metrics, response=response, extracted=json.dumps(extracted, ensure_ascii=False, default=str))


def metric_names(spec: TaskSpec) -> tuple[MetricSpec, ...]:
    if spec.output_type == "generate_until":
        return tuple(MetricSpec(f"{m.name},{p.name}", m.higher_is_better, m.aggregation) for p in spec.filters
                     for m in spec.metrics)
    return tuple(MetricSpec(m.name, m.higher_is_better, m.aggregation) for m in spec.metrics)


_SCORERS = {"multiple_choice": score_multiple_choice, "loglikelihood": score_loglikelihood, "generate_until": score_generate,
            "loglikelihood_rolling": score_rolling}
_KINDS = {"generate_until": ("generate",), "loglikelihood_rolling": ("loglikelihood_rolling",)}


def make_task(spec: TaskSpec) -> Task:
    """The Task value of a checked spec; nothing is read until the run calls `load`."""
    return Task(
        name=spec.name, version=spec.harness_version, load=partial(source.load, spec), build=partial(build, spec),
        score=partial(_SCORERS[spec.output_type], spec), metrics=metric_names(spec), default_fewshot=spec.num_fewshot,
        tags=spec.tags, description=f"lm-eval YAML {spec.source}",
        request_kinds=_KINDS.get(spec.output_type, ("loglikelihood",)),
    )
