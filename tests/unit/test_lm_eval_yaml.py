"""lm-eval task YAMLs loaded as they are: includes, templates, filters, metrics, !function, names,
bad input; and the requests of lm-eval's own arc_easy / arc_challenge / gsm8k / hellaswag YAMLs
against lm-eval's ConfigurableTask (and our native tasks) on the same hand-written hub-schema docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import UsageError
from harness.core.requests import Generate, LoglikelihoodResult
from harness.core.task import Dataset, ScoreContext
from harness.scoring.filters import StepPipeline, check_filter
from harness.taskkit.lm_eval_yaml import IncludeResolver, PortedFunction, YamlRefusal, make_task, scan, table, task_spec
from harness.taskkit.lm_eval_yaml import build as B
from harness.taskkit.lm_eval_yaml.jinja import Field, FieldError, render

LM_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """dataset_path: json
dataset_kwargs:
  data_files: {test: docs.jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}"
doc_to_target: "{{label}}"
doc_to_choice: "{{options}}"
"""


def spec_of(path: Path, functions=None):
    return task_spec(IncludeResolver().load(path), functions or {})


def dataset(docs, pool=None) -> Dataset:
    return Dataset(docs, docs if pool is None else pool, "test", "fp")


# --- includes ----------------------------------------------------------------------------------


def test_include_chain_local_keys_win_and_hash_covers_the_chain(tmp_path):
    write(tmp_path, "base.yaml", BASE + "description: base\nnum_fewshot: 3\n")
    write(tmp_path, "mid/mid.yaml", "include: ../base.yaml\ndescription: mid\n")
    task = write(tmp_path, "mid/task.yaml", "include: mid.yaml\ntask: t1\nnum_fewshot: 1\n")
    loaded = IncludeResolver().load(task)
    assert loaded.config["description"] == "mid" and loaded.config["num_fewshot"] == 1
    assert loaded.config["output_type"] == "multiple_choice" and "include" not in loaded.config
    assert [p.name for p in loaded.chain] == ["task.yaml", "mid.yaml", "base.yaml"]
    before = loaded.content_hash
    write(tmp_path, "base.yaml", BASE + "description: base\nnum_fewshot: 4\n")
    assert IncludeResolver().load(task).content_hash != before  # an included file's change changes the hash
    assert spec_of(task).harness_version == f"Yaml+yaml.{IncludeResolver().load(task).content_hash[:12]}"


def test_missing_include_and_loop_name_file_and_key(tmp_path):
    missing = write(tmp_path, "a.yaml", "include: nope.yaml\ntask: a\n")
    with pytest.raises(YamlRefusal, match=r"a\.yaml: include: included file nope\.yaml does not exist"):
        IncludeResolver().load(missing)
    write(tmp_path, "x.yaml", "include: y.yaml\ntask: x\n")
    write(tmp_path, "y.yaml", "include: x.yaml\n")
    with pytest.raises(YamlRefusal, match=r"y\.yaml: include: include loop through x\.yaml"):
        IncludeResolver().load(tmp_path / "x.yaml")


def test_paths_resolve_as_path_resolve_through_symlinks(tmp_path):
    """The resolver resolves each folder once; a symlinked file or folder, and `..` after a symlinked
    folder, still land where Path.resolve puts them, so a loop through a symlink is still a loop."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    write(real, "base.yaml", BASE)
    (tmp_path / "linked").symlink_to(real)
    (real / "sub" / "alias.yaml").symlink_to(real / "base.yaml")
    (tmp_path / "elsewhere").mkdir()
    (real / "sub" / "up").symlink_to(tmp_path / "elsewhere")
    resolver = IncludeResolver()
    for path in (tmp_path / "linked" / "base.yaml", real / "sub" / "alias.yaml", real / "sub" / "up" / ".." / "base.yaml",
                 tmp_path / "linked" / "sub" / ".." / "base.yaml", real / "sub" / "up" / "missing.yaml"):
        assert resolver._real(path) == path.resolve(), path
    write(real, "loop.yaml", "include: sub/back.yaml\ntask: loop\n")
    (real / "sub" / "back.yaml").symlink_to(real / "loop.yaml")
    with pytest.raises(YamlRefusal, match="include loop"):
        IncludeResolver().load(tmp_path / "linked" / "loop.yaml")


def test_yaml_syntax_error_is_one_line(tmp_path):
    bad = write(tmp_path, "bad.yaml", "task: [unclosed\n")
    with pytest.raises(YamlRefusal) as info:
        IncludeResolver().load(bad)
    assert str(info.value).startswith(f"{bad}: YAML syntax error") and "\n" not in str(info.value)


# --- templates ---------------------------------------------------------------------------------


def test_jinja_semantics_as_lm_eval():
    assert render("a{{x}}\n", {"x": 1}) == "a1\n"  # keep_trailing_newline
    assert render("{{ s | regex_replace('[0-9]+', '#') }}", {"s": "a1b22"}) == "a#b#"
    with pytest.raises(FieldError, match="'missing' is undefined"):
        render("{{missing}}", {"x": 1})
    assert Field("{{n}}", has_choices=True).target({"n": 3}) == 3  # digits -> int when the task has choices
    assert Field("{{n}}", has_choices=False).target({"n": 3}) == "3"
    assert Field("{{l}}").target({"l": [1, 2]}) == [1, 2]  # "[1, 2]" -> a list
    assert Field("[not a list]").target({}) == "[not a list]"
    assert Field("{{c}}").choices({"c": ["a", "b"]}) == ["a", "b"]
    assert Field("col", frozenset({"col"})).text({"col": "raw {{x}}"}) == "raw {{x}}"  # a column, not a template


def test_strict_undefined_at_build_names_file_and_key(tmp_path):
    path = write(tmp_path, "t.yaml", BASE.replace("{{question}}", "{{questoin}}") + "task: t\n")
    spec = spec_of(path)
    with pytest.raises(YamlRefusal, match=r"t\.yaml: doc_to_text: template .*'questoin' is undefined"):
        B.build(spec, dataset([{"question": "q", "label": 0, "options": ["a", "b"]}]), None, 0, 1234)


# --- config checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("extra, key, reason", [
    ("metric_list:\n  - metric: bleu\n", "metric_list[0]", "unknown metric bleu for multiple_choice"),
    ("metric_list:\n  - metric: f1\n    aggregation: mean\n", "metric_list[0].aggregation",
     "aggregation 'mean' is not supported for f1 (f1 only)"),
    ("process_results: !function utils.process_results\n", "process_results", "custom process_results is not supported"),
    ("metric_list:\n  - metric: nonsense\n", "metric_list[0]", "unknown metric nonsense"),
    ("output_type: generate_until\nfilter_list:\n  - name: f\n    filter:\n      - function: nope\n", "filter_list[0].filter[0]",
     "unknown filter 'nope'"),
    ("process_docs: !function utils.process_docs\n", "process_docs", "utils.py not found"),
    ("doc_to_text: '{{ unclosed'\n", "doc_to_text", "Jinja syntax error"),
    ("bogus_key: 1\n", "bogus_key", "unknown key"),
    ("output_type: loglikelihood_rolling\nmetric_list:\n  - metric: acc\n", "metric_list[0]",
     "unknown metric acc for loglikelihood_rolling"),
    ("generation_kwargs: {until: [x], top_p: 0.9}\noutput_type: generate_until\n", "generation_kwargs", "top_p not supported"),
])
def test_unsupported_configs_are_refused_with_file_and_key(tmp_path, extra, key, reason):
    path = write(tmp_path, "t.yaml", BASE + "task: t\n" + extra)
    with pytest.raises(YamlRefusal) as info:
        spec_of(path)
    assert str(info.value).startswith(f"{path}: {key}: ") and reason in str(info.value) and "\n" not in str(info.value)


def test_function_table_matches_by_file_hash(tmp_path):
    utils = write(tmp_path, "utils.py", "def process_docs(ds):\n    return ds\n")
    path = write(tmp_path, "t.yaml", BASE + "task: t\nprocess_docs: !function utils.process_docs\n")
    import hashlib

    digest = hashlib.sha256(utils.read_bytes()).hexdigest()
    ported = table([PortedFunction(digest, "process_docs", "process_docs", lambda docs: [{**d, "tag": 1} for d in docs], "test")])
    assert spec_of(path, ported).data.process_docs([{"a": 1}]) == [{"a": 1, "tag": 1}]
    utils.write_text("def process_docs(ds):\n    return ds[:1]\n")  # changed content: no longer the ported code
    from harness.taskkit.lm_eval_yaml.functions import file_sha256

    file_sha256.cache_clear()
    with pytest.raises(YamlRefusal, match="process_docs: !function utils.process_docs is not ported"):
        spec_of(path, ported)


def test_function_module_is_never_imported(tmp_path):
    marker = tmp_path / "imported"
    write(tmp_path, "evil.py", f"open({str(marker)!r}, 'w').write('x')\ndef f(d):\n    return 'x'\n")
    path = write(tmp_path, "t.yaml", BASE + "task: t\ndoc_to_text: !function evil.f\n")
    catalog = scan([tmp_path], {})
    assert not marker.exists() and catalog.refusal_of("t") is not None and "not ported" in catalog.refusal_of("t").message
    assert path.exists()


# --- filters -----------------------------------------------------------------------------------


def test_filters_as_lm_eval_registry():
    assert StepPipeline("p", (("regex", {"regex_pattern": r"(\d+)"}), ("take_first", {}))).apply(["a 12 b 3"]) == "12"
    assert StepPipeline("p", (("remove_whitespace", {}), ("lowercase", {}), ("take_first", {}))).apply(["  AbC "]) == "abc"
    assert StepPipeline("p", (("uppercase", {}), ("map", {"mapping_dict": {"A": "yes"}, "default_value": "no"}),
                              ("take_first", {}))).apply(["a", "b"]) == "yes"
    assert StepPipeline("p", (("take_first_k", {"k": 3}), ("majority_vote", {}), ("take_first", {}))).apply(
        ["x", "y", "y", "x", "x"]) == "y"
    mc = StepPipeline("p", (("multi_choice_regex", {"regex_pattern": r"\(([A-D])\)", "ignore_case": True}), ("take_first", {})))
    assert mc.apply(["The answer is (B)."], {"choices": ["cat", "dog"]}) == "B"
    assert mc.apply(["I think DOG"], {"choices": ["cat", "dog"]}) == "(B)"
    assert mc.apply(["answer: A"], {"choices": ["cat", "dog"]}) == "(A)"
    assert check_filter("take_first_k", {}) == "filter take_first_k needs k"
    assert check_filter("regex", {"pattern": "x"}) == "filter regex has no argument pattern"


def test_generate_metrics_and_filters_score(tmp_path):
    path = write(tmp_path, "g.yaml", """task: g
dataset_path: json
dataset_kwargs: {data_files: {test: d.jsonl}}
test_split: test
doc_to_text: "{{q}}"
doc_to_target: "{{a}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 7}
metric_list:
  - metric: exact_match
    ignore_case: true
filter_list:
  - name: num
    filter:
      - function: regex
        regex_pattern: "(\\\\d+)"
      - function: take_first
""")
    task = make_task(spec_of(path))
    assert [m.name for m in task.metrics] == ["exact_match,num"] and task.request_kinds == ("generate",)
    [inst] = task.build(dataset([{"q": "2+2=", "a": "4"}]), None, 0, 1234)
    assert inst.requests == (Generate(prompt="2+2=", stop=("\n",), max_tokens=7, temperature=0.0),)
    assert task.score(inst, [["it is 4\nthen 5"]], ScoreContext()).metrics == {"exact_match,num": 1.0}
    assert task.score(inst, [["5"]], ScoreContext()).metrics == {"exact_match,num": 0.0}


def test_multiple_choice_scores_and_int_target_indexes_choices(tmp_path):
    path = write(tmp_path, "t.yaml", BASE + "task: t\nmetric_list: [{metric: acc}, {metric: acc_norm}, {metric: exact_match}]\n")
    task = make_task(spec_of(path))
    [inst] = task.build(dataset([{"question": "q", "label": 1, "options": ["a", "bbbb"]}]), None, 0, 1234)
    assert [r.continuation for r in inst.requests] == [" a", " bbbb"] and inst.target == "bbbb"
    scored = task.score(inst, [LoglikelihoodResult(-1.0, False), LoglikelihoodResult(-2.0, True)], ScoreContext())
    assert scored.metrics == {"acc": 0.0, "acc_norm": 1.0, "exact_match": 1.0}


# --- names -------------------------------------------------------------------------------------


def test_collision_is_namespaced_and_groups_follow(tmp_path):
    write(tmp_path, "t.yaml", BASE + "task: hellaswag\ntag: [mine]\n")
    write(tmp_path, "g.yaml", "group: grp\ntask: [hellaswag]\naggregate_metric_list: [{metric: acc, weight_by_size: false}]\n")
    catalog = scan([tmp_path], {}, reserved={"hellaswag"})
    assert list(catalog.tasks) == ["lm_eval/hellaswag"]
    assert catalog.groups["grp"].members == ("lm_eval/hellaswag",) and not catalog.groups["grp"].weight_by_size
    assert catalog.tags == {"mine": ("lm_eval/hellaswag",)}


def test_include_path_env_registers_in_the_catalog(tmp_path, monkeypatch):
    from harness import tasks as catalog

    write(tmp_path, "t.yaml", BASE + "task: my_env_task\n")
    write(tmp_path, "bad.yaml", BASE + "task: my_bad_task\nmetric_list: [{metric: nope}]\n")
    monkeypatch.setenv("HARNESS_INCLUDE_PATH", f"{tmp_path}:{tmp_path / 'missing-is-an-error'}")
    with pytest.raises(UsageError, match="is not a directory"):
        catalog.include_paths([])
    monkeypatch.setenv("HARNESS_INCLUDE_PATH", str(tmp_path))
    try:
        catalog._INCLUDED.clear()
        catalog.include_paths([])
        assert "my_env_task" in catalog.task_names() and catalog.get_task("my_env_task").version.startswith("Yaml+yaml.")
        with pytest.raises(UsageError, match=r"bad\.yaml: metric_list\[0\]: unknown metric nope"):
            catalog.get_task("my_bad_task")
    finally:
        catalog._INCLUDED.clear()
        monkeypatch.delenv("HARNESS_INCLUDE_PATH")
        catalog.include_paths([])
    assert "my_env_task" not in catalog.task_names()


# --- against lm-eval and our native tasks ------------------------------------------------------

ARC = [{"id": f"q{i}", "question": f"Which is {i}?", "choices": {"text": [f"{i}", f"{i + 1}", "no"], "label": ["A", "B", "C"]},
        "answerKey": "ABC"[i % 3]} for i in range(6)]
GSM = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(8)]
HELLA = [{"ind": i, "activity_label": "Cooking", "ctx_a": f"A man cuts {i} onions.", "ctx_b": "then he", "ctx": "",
          "endings": [f"cries [title] {i}.", "smiles.", "leaves.", "sings."], "source_id": "x", "split": "val",
          "split_type": "indomain", "label": str(i % 4)} for i in range(6)]


def lm_eval_task(path: str, splits: dict[str, list[dict]], num_fewshot: int):
    """lm-eval's own ConfigurableTask from its YAML, on these docs (as benchmarks/lm_eval_reference.py builds it)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(LM_TASKS / path)
    data = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    cfg.update(custom_dataset=lambda **_: data, num_fewshot=num_fewshot)
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(1234)
    task.build_all_requests()
    return task


def ours(path: str, splits: dict[str, list[dict]], num_fewshot: int, functions=None, reserved=()):
    from harness.taskkit.lm_eval_yaml import source

    spec = task_spec(IncludeResolver().load(LM_TASKS / path), functions or {})
    docs, pool = source._splits(spec, lambda split: splits[split])
    task = make_task(spec)
    return task, task.build(Dataset(docs, pool, "t", "f"), None, num_fewshot, 1234)


@pytest.mark.parametrize("path", ["arc/arc_easy.yaml", "arc/arc_challenge.yaml"])
@pytest.mark.parametrize("shots", [0, 3])
def test_arc_requests_equal_lm_eval(path, shots):
    splits = {"train": ARC, "validation": ARC, "test": ARC}
    reference = [tuple(i.arguments) for i in lm_eval_task(path, splits, shots).instances]
    _, instances = ours(path, splits, shots)
    assert [(r.context, r.continuation) for inst in instances for r in inst.requests] == reference


def test_gsm8k_requests_equal_lm_eval_and_native():
    from harness import tasks as catalog

    splits = {"train": GSM, "test": GSM[:3]}
    reference = lm_eval_task("gsm8k/gsm8k.yaml", splits, 5).instances
    task, instances = ours("gsm8k/gsm8k.yaml", splits, 5)
    assert [inst.requests[0].prompt for inst in instances] == [i.arguments[0] for i in reference]
    kwargs = reference[0].arguments[1]
    assert instances[0].requests[0].stop == tuple(kwargs["until"]) and instances[0].requests[0].temperature == kwargs["temperature"]
    native = catalog.get_task("gsm8k")
    native_instances = native.build(Dataset(GSM[:3], GSM, "t", "f"), None, 5, 1234)
    assert [i.requests for i in native_instances] == [i.requests for i in instances]
    answer = ["The sum is 2. #### 2\nQuestion: next"]
    assert task.score(instances[1], [answer], ScoreContext()).metrics == native.score(native_instances[1], [answer], ScoreContext()).metrics
    assert [m.name for m in task.metrics] == [m.name for m in native.metrics]


def test_hellaswag_through_the_function_table_equals_native_and_lm_eval():
    from harness import tasks as catalog
    from harness.tasks import hellaswag
    from harness.tasks.lm_eval_functions import PORTED

    assert scan([LM_TASKS / "hellaswag"], PORTED, reserved={"hellaswag"}).tasks.keys() >= {"lm_eval/hellaswag"}
    splits = {"train": HELLA, "validation": HELLA}
    for shots in (0, 2):
        reference = [tuple(i.arguments) for i in lm_eval_task("hellaswag/hellaswag.yaml", splits, shots).instances]
        task, instances = ours("hellaswag/hellaswag.yaml", splits, shots, PORTED)
        assert [(r.context, r.continuation) for inst in instances for r in inst.requests] == reference
        processed = [hellaswag.process_hub_row(r) for r in HELLA]
        native = catalog.get_task("hellaswag")
        native_instances = native.build(Dataset(processed, processed, "t", "f"), None, shots, 1234)
        assert [i.requests for i in native_instances] == [i.requests for i in instances]
        responses = [LoglikelihoodResult(-float(len(r.continuation)) / (k + 1), k == 1) for k, r in enumerate(instances[2].requests)]
        assert task.score(instances[2], responses, ScoreContext()).metrics == \
            native.score(native_instances[2], responses, ScoreContext()).metrics
