"""Corpus-level aggregations (harness.scoring.corpus) equal lm-eval 0.4.13's own functions, and YAML
tasks using them (loglikelihood perplexity, loglikelihood_rolling word/byte perplexity and bits_per_byte,
multiple-choice f1 / mcc / brier_score, generation bleu / chrf / ter) build lm-eval's requests and give
lm-eval's values from the same hand-made responses. No model is run; lm-eval is imported here only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from lm_eval.api import metrics as M

from harness.core.requests import LoglikelihoodResult
from harness.core.task import Dataset, ScoreContext
from harness.run.evaluator import _task_aggregates
from harness.scoring import corpus
from harness.taskkit.lm_eval_yaml import IncludeResolver, make_task, source, task_spec
from harness.tasks.lm_eval_functions import PORTED

LM_TASKS = Path(M.__file__).parents[1] / "tasks"

LLS = [-12.5, -3.25, -40.0, -7.125, -0.5]
COUNTS = [7, 2, 31, 5, 1]
PAIRS = [(0, 1), (1, 1), (1, 0), (0, 0), (1, 1), (0, 1), (1, 1)]
MULTI = [(0, 2), (1, 1), (2, 2), (2, 0), (1, 1), (0, 0), (2, 1)]
REFS = ["the cat sat on the mat", "a quick brown fox jumps", "hello world", "it is raining today in the city"]
PREDS = ["the cat sat on a mat", "quick brown foxes jump", "hello there world", "it rains today in the city"]


def test_aggregations_equal_lm_eval():
    pairs = [list(p) for p in zip(LLS, COUNTS)]
    assert corpus.perplexity([[ll] for ll in LLS]) == M.perplexity(LLS) == corpus.perplexity(LLS)
    assert corpus.weighted_perplexity(pairs) == M.weighted_perplexity(list(zip(LLS, COUNTS)))
    assert corpus.bits_per_byte(pairs) == M.bits_per_byte(list(zip(LLS, COUNTS)))
    for items in (PAIRS, [(0, 0), (0, 0)], [(1, 0), (0, 1)], [(1, 1)]):
        assert corpus.f1([list(p) for p in items]) == pytest.approx(float(M.f1_score(items)), abs=0, rel=0)
    assert corpus.matthews_corrcoef([list(p) for p in PAIRS]) == M.matthews_corrcoef(PAIRS)
    assert corpus.matthews_corrcoef([list(p) for p in MULTI]) == M.matthews_corrcoef(MULTI)
    assert corpus.matthews_corrcoef([[0, 0], [0, 0]]) == M.matthews_corrcoef([(0, 0), (0, 0)])
    text = [list(p) for p in zip(REFS, PREDS)]
    for name, fn in (("bleu", M.bleu), ("chrf", M.chrf), ("chrf++", M.chrfpp), ("ter", M.ter)):
        assert corpus.AGGREGATIONS[name](text) == fn(list(zip(REFS, PREDS))), name
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]]
    assert corpus.brier_score([[g, p] for g, p in zip([0, 1, 1], probs)]) == M.brier_score(list(zip([0, 1, 1], probs)))
    assert str(corpus.f1([list(p) for p in MULTI])) == "nan"  # sklearn raises (multiclass, average='binary')


def _lm_eval_task(yaml_path: Path, splits: dict[str, list[dict]]):
    """lm-eval's ConfigurableTask from the YAML on these docs (as benchmarks/lm_eval_reference.py builds it)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(yaml_path)
    data = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    cfg.update(custom_dataset=lambda **_: data, num_fewshot=0)
    task = ConfigurableTask(config=cfg)
    task.build_all_requests()
    return task


def _ours(yaml_path: Path, splits: dict[str, list[dict]]):
    spec = task_spec(IncludeResolver().load(yaml_path), PORTED)
    docs, pool = source._splits(spec, lambda split: splits[split])
    task = make_task(spec)
    return task, task.build(Dataset(docs, pool, "t", "f"), None, 0, 1234)


def _lm_eval_values(ref, responses: list[list]) -> dict[str, float]:
    """lm-eval's process_results per document, then its aggregation per metric."""
    per_doc = [ref.process_results(inst.doc, resp) for inst, resp in zip(ref.instances_by_doc, responses)]
    return {k: ref.aggregation()[k]([d[k] for d in per_doc]) for k in per_doc[0]}


def _our_values(task, instances, responses: list[list]) -> dict[str, float]:
    """Our scores through the evaluator's aggregation (samples' metrics JSON read back as the store gives it)."""
    rows = [json.dumps(task.score(i, r, ScoreContext()).metrics) for i, r in zip(instances, responses)]
    store = SimpleNamespace(sample_metrics=lambda run_id, name: {"metrics": rows})
    return {k: a.value for k, a in _task_aggregates(store, "run", SimpleNamespace(task=task)).items()}  # type: ignore[arg-type]


def _by_doc(ref) -> list:
    docs: dict[int, list] = {}
    for inst in ref.instances:
        docs.setdefault(inst.doc_id, []).append(inst)
    ref.instances_by_doc = [sorted(v, key=lambda i: i.idx)[0] for _, v in sorted(docs.items())]
    return [sorted(v, key=lambda i: i.idx) for _, v in sorted(docs.items())]


PAGES = [{"page": " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 ) , "
                  "commonly referred to as Valkyria Chronicles III , is a 1 @,@ 000 @-@ year tactical game . \n"},
         {"page": " The game 's \" story \" runs parallel to the first game ; it began in 2010 @.@ 5 [ citation ] . \n"},
         {"page": "Short   text\twith  odd\nspacing N times = = heading = = "}]


def test_wikitext_rolling_requests_and_perplexities_equal_lm_eval(tmp_path):
    folder = tmp_path / "wikitext"
    shutil.copytree(LM_TASKS / "wikitext", folder, ignore=shutil.ignore_patterns("__pycache__"))
    splits = {"train": PAGES, "validation": PAGES, "test": PAGES}
    ref = _lm_eval_task(folder / "wikitext.yaml", splits)
    task, instances = _ours(folder / "wikitext.yaml", splits)
    assert task.request_kinds == ("loglikelihood_rolling",)
    assert [(r.text,) for inst in instances for r in inst.requests] == [tuple(i.arguments) for i in ref.instances]
    _by_doc(ref)
    lls = [-101.25, -33.5, -17.75]
    assert _our_values(task, instances, [[ll] for ll in lls]) == _lm_eval_values(ref, [[ll] for ll in lls])
    assert {m.name: m.higher_is_better for m in task.metrics} == {k: v for k, v in ref.higher_is_better().items()}


ROLLING_YAML = """task: my_rolling
dataset_path: json
dataset_kwargs:
  data_files: {test: docs.jsonl}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
"""


def test_rolling_yaml_with_default_metrics_counts_words_and_bytes_as_lm_eval(tmp_path):
    docs = [{"text": "Plain words here."}, {"text": "  leading and trailing  "}, {"text": "naïve café — ünïcode bytes"}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "t.yaml").write_text(ROLLING_YAML)
    ref = _lm_eval_task(tmp_path / "t.yaml", {"test": docs})
    task, instances = _ours(tmp_path / "t.yaml", {"test": docs})
    assert [(r.text,) for inst in instances for r in inst.requests] == [tuple(i.arguments) for i in ref.instances]
    _by_doc(ref)
    lls = [-9.5, -21.0, -44.125]
    ours = _our_values(task, instances, [[ll] for ll in lls])
    assert set(ours) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert ours == _lm_eval_values(ref, [[ll] for ll in lls])


LL_YAML = ROLLING_YAML.replace("loglikelihood_rolling", "loglikelihood").replace('doc_to_text: ""', 'doc_to_text: "{{ctx}}"')
MC_YAML = ROLLING_YAML.replace("loglikelihood_rolling", "multiple_choice").replace('doc_to_text: ""', 'doc_to_text: "{{ctx}}"') \
    .replace('"{{text}}"', '"{{label}}"') + 'doc_to_choice: "{{options}}"\n'
GEN_YAML = ROLLING_YAML.replace("loglikelihood_rolling", "generate_until").replace('doc_to_text: ""', 'doc_to_text: "{{ctx}}"')


def test_loglikelihood_perplexity_equals_lm_eval(tmp_path):
    docs = [{"ctx": f"Question {i}:", "text": f" answer {i}"} for i in range(4)]
    (tmp_path / "t.yaml").write_text(LL_YAML + "metric_list:\n  - metric: perplexity\n  - metric: acc\n")
    ref = _lm_eval_task(tmp_path / "t.yaml", {"test": docs})
    task, instances = _ours(tmp_path / "t.yaml", {"test": docs})
    assert [(r.context, r.continuation) for inst in instances for r in inst.requests] == [tuple(i.arguments) for i in ref.instances]
    _by_doc(ref)
    results = [(-3.5, True), (-8.25, False), (-0.75, True), (-12.0, False)]
    ours = _our_values(task, instances, [[LoglikelihoodResult(ll, g)] for ll, g in results])
    assert ours == _lm_eval_values(ref, [[r] for r in results])
    assert [(m.name, m.higher_is_better, m.aggregation) for m in task.metrics] == [("perplexity", False, "perplexity"),
                                                                                   ("acc", True, "mean")]


def test_multiple_choice_f1_mcc_brier_equal_lm_eval(tmp_path):
    docs = [{"ctx": f"Is {i} even?", "text": "", "label": i % 2, "options": ["no", "yes"]} for i in range(6)]
    metrics = "metric_list:\n" + "".join(f"  - metric: {m}\n" for m in ("acc", "f1", "mcc", "brier_score"))
    (tmp_path / "t.yaml").write_text(MC_YAML + metrics)
    ref = _lm_eval_task(tmp_path / "t.yaml", {"test": docs})
    task, instances = _ours(tmp_path / "t.yaml", {"test": docs})
    assert [(r.context, r.continuation) for inst in instances for r in inst.requests] == [tuple(i.arguments) for i in ref.instances]
    _by_doc(ref)
    lls = [(-1.0, -2.0), (-0.5, -0.25), (-3.0, -1.0), (-2.0, -2.5), (-0.1, -0.2), (-4.0, -1.5)]
    ours = _our_values(task, instances, [[LoglikelihoodResult(a, False), LoglikelihoodResult(b, False)] for a, b in lls])
    expected = _lm_eval_values(ref, [[(a, False), (b, False)] for a, b in lls])
    assert ours.keys() == expected.keys() and all(ours[k] == pytest.approx(float(expected[k]), rel=1e-15) for k in ours)
    assert ours["f1"] == float(expected["f1"]) and ours["mcc"] == expected["mcc"]


def test_generation_bleu_chrf_ter_equal_lm_eval(tmp_path):
    docs = [{"ctx": f"Translate {i}:", "text": ref} for i, ref in enumerate(REFS)]
    metrics = "metric_list:\n" + "".join(f"  - metric: {m}\n" for m in ("bleu", "chrf", "ter"))
    (tmp_path / "t.yaml").write_text(GEN_YAML + "generation_kwargs: {until: ['\\n\\n']}\n" + metrics)
    ref = _lm_eval_task(tmp_path / "t.yaml", {"test": docs})
    task, instances = _ours(tmp_path / "t.yaml", {"test": docs})
    assert [inst.requests[0].prompt for inst in instances] == [i.arguments[0] for i in ref.instances]
    _by_doc(ref)
    ours = _our_values(task, instances, [[p] for p in PREDS])
    expected = _lm_eval_values(ref, [[p] for p in PREDS])
    assert ours == {f"{k},none": v for k, v in expected.items()}
    assert {m.name: m.higher_is_better for m in task.metrics} == {"bleu,none": True, "chrf,none": True, "ter,none": False}


def test_group_of_corpus_metric_is_size_weighted_mean_with_lm_eval_pooled_stderr():
    from harness.scoring.stats import pooled

    a = corpus.corpus_aggregate("perplexity", [[-1.0], [-2.0], [-4.5]])
    b = corpus.corpus_aggregate("perplexity", [[-3.0], [-0.25]])
    group = pooled([a, b], bounded=False)
    assert group.value == (a.value * 3 + b.value * 2) / 5
    assert group.stderr == pytest.approx(float(M.pooled_sample_stderr([a.stderr, b.stderr], [3, 2])), rel=1e-12)
    # one document: lm-eval has no stderr ("N/A"), and neither has the group
    single = corpus.corpus_aggregate("perplexity", [[-3.0]])
    assert single.stderr is None and pooled([a, single]).stderr is None
    # where lm-eval's aggregation raises (gold index -100 for brier_score), harness reports NaN
    assert str(corpus.corpus_aggregate("brier_score", [[-100, [0.5, 0.5]], [0, [1.0, 0.0]]]).value) == "nan"


def test_bootstrap_stderr_is_lm_eval_s_to_the_last_bit(monkeypatch):
    """lm-eval's own bootstrap_stderr (in one process) over the same items: the same float, for every
    aggregation lm-eval bootstraps; none for those it does not, nor for one document."""
    import random

    from harness.scoring.corpus_stderr import bootstrap_stderr, resamples
    from harness.scoring.stats import Z95

    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    rng = random.Random(7)
    lls = [-rng.uniform(0.1, 30.0) for _ in range(40)]
    ours = corpus.corpus_aggregate("perplexity", [[ll] for ll in lls])
    assert ours.stderr == M.bootstrap_stderr(M.perplexity, lls, 100_000)  # lm-eval's default count
    assert ours.ci_low == ours.value - Z95 * ours.stderr and ours.ci_high == ours.value + Z95 * ours.stderr
    binary = [(rng.randint(0, 1), rng.randint(0, 1)) for _ in range(30)]
    multi = [(rng.randint(0, 3), rng.randint(0, 3)) for _ in range(25)]
    for name, theirs, items in (("f1", M.f1_score, binary), ("matthews_corrcoef", M.matthews_corrcoef, binary),
                                ("matthews_corrcoef", M.matthews_corrcoef, multi)):
        # 2,000 resamples (two chunks, seeds 0 and 1): sklearn per resample makes 100,000 too slow for a test
        assert bootstrap_stderr(name, corpus.AGGREGATIONS[name], [list(p) for p in items], 2000) == \
            M.bootstrap_stderr(theirs, items, 2000), name
    text = list(zip(REFS, PREDS))
    for name, theirs in (("bleu", M.bleu), ("chrf", M.chrf), ("chrf++", M.chrfpp), ("ter", M.ter)):
        assert corpus.corpus_aggregate(name, [list(p) for p in text]).stderr == M.bootstrap_stderr(theirs, text, 100)
    assert [resamples(a) for a in ("perplexity", "f1", "bleu", "ter", "weighted_perplexity", "bits_per_byte",
                                   "brier_score")] == [100_000, 100_000, 100, 100, 0, 0, 0]
    pairs = [list(p) for p in zip(LLS, COUNTS)]
    assert corpus.corpus_aggregate("bits_per_byte", pairs).stderr is None
    # --bootstrap-iters: lm-eval's count (bleu still capped at 100), 0 for none
    assert corpus.corpus_aggregate("perplexity", [[ll] for ll in lls], 1000).stderr == M.bootstrap_stderr(M.perplexity, lls, 1000)
    assert corpus.corpus_aggregate("perplexity", [[ll] for ll in lls], 0).stderr is None
    assert resamples("bleu", 50) == 50 and resamples("bleu", 10**6) == 100 and resamples("f1", 0) == 0


def test_a_group_interval_is_clipped_only_for_metrics_in_the_unit_interval():
    from harness.run.evaluator import in_unit_interval
    from harness.scoring.stats import mean_with_stderr, pooled

    ppl = [corpus.corpus_aggregate("perplexity", [[-0.01], [-0.02], [-0.5]]), corpus.corpus_aggregate("perplexity", [[-0.2], [-0.01]])]
    bounded = in_unit_interval(["perplexity", "perplexity"], ppl)
    group = pooled(ppl, bounded=bounded)
    assert not bounded and group.ci_low is not None and group.ci_low < 1.0 < group.ci_high  # perplexity is >= 1
    accs = [mean_with_stderr([1.0, 1.0, 0.0]), mean_with_stderr([1.0, 1.0])]
    assert in_unit_interval(["mean", "mean"], accs) and pooled(accs, bounded=True).ci_high == 1.0
    assert not in_unit_interval(["mean", "bleu"], accs)
