"""Task definitions against lm-evaluation-harness 0.4.13 itself, on the committed fixtures.

lm-eval's own `ConfigurableTask` is built from its shipped YAML with the dataset swapped for
the same documents (`custom_dataset`), and its Instances are compared byte for byte with ours;
its `process_results` (after its own filters) is compared with our `score`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import lm_eval
import pytest
from lm_eval.api.instance import Instance as LmInstance
from lm_eval.api.task import ConfigurableTask
from lm_eval.models.utils import postprocess_generated_text
from lm_eval.tasks._yaml_loader import load_yaml

from harness import tasks as catalog
from harness.core.errors import UsageError
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodResult
from harness.core.task import Dataset, ScoreContext
from harness.taskkit.data import FIXTURE_DIR, forced_source
from harness.taskkit.fewshot import FirstNSampler, RandomSampler
from harness.taskkit.formats import clear_dataset_cache
from harness.tasks import gsm8k as gsm8k_mod
from harness.tasks import hellaswag as hellaswag_mod
from harness.tasks import mmlu as mmlu_mod
from tests.conftest import write_hub_repo

LM_TASKS = Path(lm_eval.__file__).parent / "tasks"
SEED = 1234


# --- helpers -----------------------------------------------------------------------------------


def lm_task(yaml_path: str, splits: dict[str, list[dict]], num_fewshot: int, **overrides) -> ConfigurableTask:
    """lm-eval's task from its YAML, reading `splits` instead of the hub."""
    config = load_yaml(LM_TASKS / yaml_path)
    dataset = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    config.update(custom_dataset=lambda **_: dataset, num_fewshot=num_fewshot, **overrides)
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(SEED)
    return task


def lm_instances(task: ConfigurableTask, limit: int | None = None) -> dict[int, list[LmInstance]]:
    task.build_all_requests(limit=limit)
    by_doc: dict[int, list[LmInstance]] = {}
    for inst in task.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    return {k: sorted(v, key=lambda i: i.idx) for k, v in by_doc.items()}


def fixture_dataset(name: str) -> Dataset:
    with forced_source("fixture"):
        return catalog.get_task(name).load()


def raw_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_mc_identical(ours, theirs: dict[int, list[LmInstance]]) -> None:
    assert [i.doc_id for i in ours] == sorted(theirs)
    for inst in ours:
        lm = theirs[inst.doc_id]
        assert all(isinstance(r, Loglikelihood) for r in inst.requests)
        assert [(r.context, r.continuation) for r in inst.requests] == [tuple(i.arguments) for i in lm]
        assert inst.prompt == lm[0].arguments[0]


def assert_gen_identical(ours, theirs: dict[int, list[LmInstance]]) -> None:
    assert [i.doc_id for i in ours] == sorted(theirs)
    for inst in ours:
        (lm,) = theirs[inst.doc_id]
        context, gen_kwargs = lm.arguments
        (request,) = inst.requests
        assert isinstance(request, Generate)
        assert inst.prompt == request.prompt == context
        assert list(request.stop) == gen_kwargs["until"]
        assert request.temperature == 0.0 and not gen_kwargs.get("do_sample", False)


# --- prompts: byte-identical to lm-eval --------------------------------------------------------


@pytest.mark.parametrize("subject", ["abstract_algebra", "high_school_european_history"])
@pytest.mark.parametrize("shots", [5, 0])
def test_mmlu_prompts_match_lm_eval(subject: str, shots: int) -> None:
    task = catalog.get_task(f"mmlu_{subject}")
    dataset = fixture_dataset(task.name)
    ours = task.build(dataset, None, shots, SEED)
    lm = lm_task(f"mmlu/default/mmlu_{subject}.yaml", {"test": dataset.docs, "dev": dataset.fewshot_docs}, shots)
    assert_mc_identical(ours, lm_instances(lm))
    assert len(ours) == 10 and ours[0].target in "ABCD"
    assert ours[0].prompt.startswith(mmlu_mod.description(subject))
    assert ours[0].prompt.count("\nAnswer:") == shots + 1


def test_hellaswag_prompts_match_lm_eval() -> None:
    task = catalog.get_task("hellaswag")
    dataset = fixture_dataset("hellaswag")
    raw = raw_jsonl(FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl")
    ours = task.build(dataset, None, 0, SEED)
    lm = lm_task("hellaswag/hellaswag.yaml", {"validation": raw, "train": raw}, 0)
    assert_mc_identical(ours, lm_instances(lm))
    assert ours[0].prompt == "Roof shingle removal: A man is sitting on a roof. He"
    assert ours[0].requests[3].continuation == " starts pulling up roofing on a roof."


def test_hellaswag_fewshot_matches_lm_eval_when_pool_holds_the_doc() -> None:
    """lm-eval draws n + 1 and drops the evaluated doc; here the pool is the validation split itself."""
    task = catalog.get_task("hellaswag")
    fixture = fixture_dataset("hellaswag")
    dataset = Dataset(fixture.docs, fixture.docs, fixture.source, fixture.fingerprint)
    raw = raw_jsonl(FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl")
    ours = task.build(dataset, 20, 3, SEED)
    lm = lm_task("hellaswag/hellaswag.yaml", {"validation": raw, "train": raw}, 3)
    assert_mc_identical(ours, lm_instances(lm, limit=20))
    for inst in ours:  # the evaluated doc never shows up among its own shots
        assert inst.prompt.count(inst.doc["query"]) == 1


@pytest.mark.parametrize("limit", [None, 7])
def test_gsm8k_prompts_match_lm_eval(limit: int | None) -> None:
    task = catalog.get_task("gsm8k")
    dataset = fixture_dataset("gsm8k")
    ours = task.build(dataset, limit, 5, SEED)
    lm = lm_task("gsm8k/gsm8k.yaml", {"test": dataset.docs, "train": dataset.fewshot_docs}, 5)
    assert_gen_identical(ours, lm_instances(lm, limit=limit))
    assert ours[0].requests[0].max_tokens == 256
    assert ours[0].prompt.count("Question: ") == 6 and ours[0].prompt.endswith("\nAnswer:")


def test_gsm8k_seed_is_the_fewshot_seed() -> None:
    task = catalog.get_task("gsm8k")
    dataset = fixture_dataset("gsm8k")
    ours = task.build(dataset, 5, 5, 42)
    lm = lm_task("gsm8k/gsm8k.yaml", {"test": dataset.docs, "train": dataset.fewshot_docs}, 5)
    lm.set_fewshot_seed(42)
    assert_gen_identical(ours, lm_instances(lm, limit=5))
    assert ours[0].prompt != task.build(dataset, 1, 5, SEED)[0].prompt


def test_gsm8k_cot_prompts_match_lm_eval() -> None:
    task = catalog.get_task("gsm8k_cot")
    dataset = fixture_dataset("gsm8k_cot")
    ours = task.build(dataset, None, 8, SEED)
    lm = lm_task("gsm8k/gsm8k-cot.yaml", {"test": dataset.docs}, 8)
    assert_gen_identical(ours, lm_instances(lm))
    assert ours[0].prompt.startswith("Q: There are 15 trees in the grove.")
    assert ours[0].target == "18"


def test_zero_shot_generation_prompts() -> None:
    dataset = fixture_dataset("gsm8k")
    (inst,) = catalog.get_task("gsm8k").build(dataset, 1, 0, SEED)
    assert inst.prompt == f"Question: {dataset.docs[0]['question']}\nAnswer:"


# --- scoring: same metric values as lm-eval's process_results ----------------------------------


def _synthetic_lls(choices: list[str], rng: random.Random) -> list[LoglikelihoodResult]:
    return [LoglikelihoodResult(-rng.uniform(0.3, 2.5) * max(len(c), 1), rng.random() < 0.3) for c in choices]


@pytest.mark.parametrize("name,yaml_path", [("mmlu_anatomy", "mmlu/default/mmlu_anatomy.yaml"), ("hellaswag", "hellaswag/hellaswag.yaml")])
def test_multiple_choice_scores_match_lm_eval(name: str, yaml_path: str) -> None:
    task = catalog.get_task(name)
    dataset = fixture_dataset(name)
    if name == "hellaswag":
        raw = raw_jsonl(FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl")
        lm = lm_task(yaml_path, {"validation": raw, "train": raw}, 0)
    else:
        lm = lm_task(yaml_path, {"test": dataset.docs, "dev": dataset.fewshot_docs}, 0)
    lm_docs = list(lm.eval_docs)
    rng = random.Random(0)
    disagreements = 0
    for inst in task.build(dataset, None, 0, SEED):
        responses = _synthetic_lls([r.continuation[1:] for r in inst.requests], rng)
        scored = task.score(inst, responses, ScoreContext())
        expected = lm.process_results(lm_docs[inst.doc_id], [(r.logprob, r.is_greedy) for r in responses])
        assert scored.metrics == pytest.approx(expected)
        assert set(scored.metrics) == {m.name for m in task.metrics}
        assert scored.loglikelihoods == [r.logprob for r in responses]
        disagreements += "acc_norm" in expected and expected["acc"] != expected["acc_norm"]
    if name == "hellaswag":
        assert disagreements > 0  # the length normalisation really was exercised


def test_acc_norm_divides_by_characters_of_the_choice() -> None:
    """lm-eval: lls / len(choice), the choice without the leading space delimiter."""
    task = catalog.get_task("hellaswag")
    doc = {"query": "q", "choices": ["abcd", "ab"], "gold": 0}
    inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
    assert [r.continuation for r in inst.requests] == [" abcd", " ab"]
    # -4.4 / 4 = -1.1 beats -2.4 / 2 = -1.2 (with the delimiter counted it would be -0.88 vs -0.8)
    scored = task.score(inst, [LoglikelihoodResult(-4.4, False), LoglikelihoodResult(-2.4, False)], ScoreContext())
    assert scored.metrics == {"acc": 0.0, "acc_norm": 1.0}


GENERATIONS = [
    "#### 1,234", "$18.", "The answer is 42.\n\nQuestion:", "The answer is $1,234.56.", "so 18 #### 18",
    "no number here", "", "-3 apples remain", "Answer: 0.5.", "#### 18\n\nQuestion: what is 5+5? #### 10",
    "The answer is 18.</s>", "18<|im_end|> 99", "Q: next question 7\nA: 8", "The answer is 18. Q: 5",
    "It is 1234.", "#### -3", "18.00", "The answer is 1,234", " #### 18 ", "costs $ 18",
]
GOLDS = ["18", "1234", "1,234", "-3", "42", "0.5"]


@pytest.mark.parametrize("name,yaml_path", [("gsm8k", "gsm8k/gsm8k.yaml"), ("gsm8k_cot", "gsm8k/gsm8k-cot.yaml")])
def test_generation_scores_match_lm_eval(name: str, yaml_path: str) -> None:
    task = catalog.get_task(name)
    fixture = fixture_dataset(name)
    docs = [{"question": f"q{i}", "answer": f"Some work.\n#### {gold}"} for i, gold in enumerate(GOLDS)]
    dataset = Dataset(docs, fixture.fewshot_docs, "test", "x")
    ours = task.build(dataset, None, 0, SEED)
    lm = lm_task(yaml_path, {"test": docs, "train": docs}, 0)
    until = lm.config.generation_kwargs["until"]
    for inst in ours:
        lm_insts = []
        for text in GENERATIONS:
            lm_inst = LmInstance("generate_until", inst.doc, (inst.prompt, {}), 0, (name, inst.doc_id, 1))
            lm_inst.resps = [postprocess_generated_text(text, until, None)]  # what lm-eval's HFLM returns
            lm_insts.append(lm_inst)
        for ensemble in lm._filters:
            ensemble.apply(lm_insts)
        for text, lm_inst in zip(GENERATIONS, lm_insts):
            scored = task.score(inst, [[text]], ScoreContext())
            expected = {
                f"exact_match,{f}": lm.process_results(inst.doc, [lm_inst.filtered_resps[f]])["exact_match"]
                for f in lm_inst.filtered_resps
            }
            assert scored.metrics == expected, (text, inst.target)
            assert json.loads(scored.extracted) == lm_inst.filtered_resps
            assert scored.response == [text]


def test_tricky_gsm8k_strings() -> None:
    task = catalog.get_task("gsm8k")
    doc = {"question": "q", "answer": "w\n#### 1234"}
    inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
    assert task.score(inst, [["#### 1,234"]], ScoreContext()).metrics == {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0}
    doc = {"question": "q", "answer": "w\n#### 18"}
    inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
    scored = task.score(inst, [["$18."]], ScoreContext())
    assert scored.metrics == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
    assert json.loads(scored.extracted) == {"strict-match": "[invalid]", "flexible-extract": "$18."}
    doc = {"question": "q", "answer": "w\n#### 42"}
    inst = task.build(Dataset([doc], [], "test", "x"), None, 0, SEED)[0]
    text = "The answer is 42.\n\nQuestion:"
    lm = lm_task("gsm8k/gsm8k.yaml", {"test": [doc], "train": [doc]}, 0)
    lm_inst = LmInstance("generate_until", doc, (inst.prompt, {}), 0, ("gsm8k", 0, 1))
    lm_inst.resps = [text]  # untruncated: same answer either way
    for ensemble in lm._filters:
        ensemble.apply([lm_inst])
    expected = {f"exact_match,{f}": lm.process_results(doc, [r])["exact_match"] for f, r in lm_inst.filtered_resps.items()}
    assert task.score(inst, [[text]], ScoreContext()).metrics == expected == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}


# --- registry, samplers, data sources ----------------------------------------------------------


def test_registry_lists_mmlu_subjects_and_groups() -> None:
    names = catalog.task_names()
    subjects = [n for n in names if n.startswith("mmlu_")]
    assert len(subjects) == 57 and {"hellaswag", "gsm8k", "gsm8k_cot"} <= set(names)
    groups = {g: catalog.get_group(g) for g in ("mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other")}
    assert all(g is not None and g.weight_by_size for g in groups.values())
    assert sorted(catalog.expand(["mmlu"])) == sorted(subjects)
    assert sum(len(catalog.expand([g])) for g in groups if g != "mmlu") == 57
    for yaml_file in sorted((LM_TASKS / "mmlu" / "default").glob("mmlu_*.yaml")):
        config = load_yaml(yaml_file, resolve_func=False, recursive=False)
        category = config["tag"].removeprefix("mmlu_").removesuffix("_tasks")
        task = catalog.get_task(config["task"])
        assert f"category:{category}" in task.tags and mmlu_mod.task_category(task.name) == category
        assert task.name in catalog.get_group(f"mmlu_{category}").tasks
        assert mmlu_mod.description(config["dataset_name"]) == config["description"]
        assert task.default_fewshot == 5 and task.request_kinds == ("loglikelihood",)
    assert mmlu_mod.task_category("hellaswag") is None


def test_task_versions_and_request_kinds_follow_lm_eval() -> None:
    expected = {"mmlu_anatomy": "mmlu/default/mmlu_anatomy.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
                "gsm8k": "gsm8k/gsm8k.yaml", "gsm8k_cot": "gsm8k/gsm8k-cot.yaml"}
    for name, path in expected.items():
        version = load_yaml(LM_TASKS / path, resolve_func=False)["metadata"]["version"]
        assert catalog.get_task(name).version == str(float(version))
    assert catalog.get_task("gsm8k").request_kinds == ("generate",)
    assert [m.name for m in catalog.get_task("gsm8k").metrics] == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert [m.name for m in catalog.get_task("hellaswag").metrics] == ["acc", "acc_norm"]


def test_samplers() -> None:
    pool = [{"i": i} for i in range(10)]
    assert FirstNSampler(pool).sample(3) == pool[:3]
    assert FirstNSampler(pool).sample(3, eval_doc=pool[1]) == [pool[0], pool[2], pool[3]]
    with pytest.raises(UsageError):
        FirstNSampler(pool).sample(11)
    rnd = random.Random(SEED)
    sampler = RandomSampler(pool, SEED)
    assert [sampler.sample(2) for _ in range(3)] == [rnd.sample(pool, 2) for _ in range(3)]
    with pytest.raises(UsageError):
        RandomSampler([], SEED).sample(1)


def test_mmlu_too_many_shots_is_a_usage_error() -> None:
    task = catalog.get_task("mmlu_anatomy")
    with pytest.raises(UsageError):
        task.build(fixture_dataset(task.name), 1, 6, SEED)


def test_missing_mirror_file_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    for name in ("mmlu_anatomy", "hellaswag", "gsm8k", "gsm8k_cot"):
        with pytest.raises(UsageError, match="missing dataset"):
            catalog.get_task(name).load()


def test_mirror_source_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(FIXTURE_DIR))
    first = catalog.get_task("mmlu_anatomy").load()
    assert first.source.startswith("mirror:") and len(first.docs) == 10 and len(first.fewshot_docs) == 5
    assert catalog.get_task("mmlu_anatomy").load() is first  # read once per process
    assert first.docs == fixture_dataset("mmlu_anatomy").docs


def test_hellaswag_mirror_schema_is_reconstructed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_jsonl(FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl")
    mirror_rows = [{"id": i, "query": f"{r['activity_label']}: {r['ctx']}", "endings": r["endings"], "label": int(r["label"])} for i, r in enumerate(raw)]
    wikihow = {"id": 99, "query": "Family Life: How to relax. Draw a bath. Fill your tub.", "endings": ["Add salts.", "Sing."], "label": 0}
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mirror_rows + [wikihow]))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    dataset = catalog.get_task("hellaswag").load()
    assert dataset.docs[:-1] == fixture_dataset("hellaswag").docs
    assert dataset.docs[-1] == {"query": "Family Life: How to relax. Draw a bath. Fill your tub.", "choices": ["Add salts.", "Sing."], "gold": 0}
    assert hellaswag_mod.split_mirror_query("Sumo: A video is shown. two men") == ("Sumo", "A video is shown.", "two men")
    with pytest.raises(UsageError):  # few-shot needs a train split the mirror does not have
        catalog.get_task("hellaswag").build(dataset, 1, 2, SEED)


def test_hub_path_against_a_local_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mmlu = fixture_dataset("mmlu_anatomy")
    gsm = fixture_dataset("gsm8k")
    hella_raw = raw_jsonl(FIXTURE_DIR / "hellaswag" / "hellaswag_val.jsonl")
    write_hub_repo(tmp_path / "cais" / "mmlu", {"anatomy": {"test": mmlu.docs, "dev": mmlu.fewshot_docs}})
    write_hub_repo(tmp_path / "openai" / "gsm8k", {"main": {"test": gsm.docs[:5], "train": gsm.fewshot_docs[:5]}})
    write_hub_repo(tmp_path / "Rowan" / "hellaswag", {"default": {"validation": hella_raw[:5], "train": hella_raw[5:8]}})
    monkeypatch.setenv("HARNESS_HUB_MIRROR", str(tmp_path))
    monkeypatch.setenv("HARNESS_DATA_SOURCE", "hub")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    clear_dataset_cache()

    loaded = catalog.get_task("mmlu_anatomy").load()
    assert loaded.source == f"hub:cais/mmlu@{mmlu_mod.HUB_REVISION}"
    assert (loaded.docs, loaded.fewshot_docs) == (mmlu.docs, mmlu.fewshot_docs)
    loaded = catalog.get_task("gsm8k").load()
    assert loaded.source == f"hub:openai/gsm8k@{gsm8k_mod.HUB_REVISION}"
    assert (loaded.docs, loaded.fewshot_docs) == (gsm.docs[:5], gsm.fewshot_docs[:5])
    assert catalog.get_task("gsm8k_cot").load().fewshot_docs == gsm8k_mod.cot_exemplar_docs()
    loaded = catalog.get_task("hellaswag").load()
    assert loaded.source.startswith("hub:Rowan/hellaswag@")
    assert loaded.docs == fixture_dataset("hellaswag").docs[:5] and len(loaded.fewshot_docs) == 3
    assert all(len(rev) == 40 for rev in (mmlu_mod.HUB_REVISION, gsm8k_mod.HUB_REVISION, hellaswag_mod.HUB_REVISION))
