"""export_gguf and quantize_gguf on the real embedded model (SmolLM2-135M-Instruct), no mocks.

The parent is the float32 checkpoint the hf backend runs (the shipped Q4_1 GGUF dequantised by
transformers). Exporting it back must give llama.cpp the same model: the same tensor bits as
llama.cpp's own float32 dequantisation of the shipped file (which also proves the q/k permutation
round-trips), the same vocabulary, merges and chat template, and the hf backend's loglikelihoods
to float noise. Quantizing must report what llama.cpp really did per tensor, bit for bit again.
Everything heavy is made once per module (export ~3 s, each quantization ~4.5 s on one thread).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from harness.backends import embedded
from harness.backends.base import parse_model_spec
from harness.backends.gguf.backend import GGUFBackend
from harness.backends.gguf.metadata import read_metadata
from harness.backends.hf.backend import HFBackend
from harness.core.errors import UsageError
from harness.core.requests import Generate, Loglikelihood
from harness.steps.base import Step, StepOutput, make_step
from harness.steps.gguf_export import CHECK_TEXT
from harness.steps.gguf_quantize import TYPES, quantize
from harness.store import artifacts
from harness.store.artifacts import Artifact

# llama.cpp with float32 weights and a float32 KV cache against torch float32 on the same weights:
# measured max |Δ loglikelihood| 3.93e-5 (median 1.1e-5) over 40 HellaSwag choices and 2 greedy
# continuations (llama-cpp-python 0.3.36, AVX2, 1 or 2 threads), as test_gguf_backend's float32 control. 5e-4 leaves room for other
# CPUs' kernels; a wrong q/k permutation or token costs whole nats.
F32_MAX_DELTA = 5e-4
GGUF_ARGS = "n_threads=1,kv_cache_type=f32"  # 2 threads spin-wait badly on 2 shared cores
N_NORMS = 61  # 30 layers x (attn_norm, ffn_norm) + output_norm: kept F32 by every type
N_MATRICES = 211  # 30 layers x 7 + token_embd (tied: no output.weight)
N_WEIGHTS = 134_515_008
STRINGS = ["Hello world, this is a test.", "In 2024, 3.14159 apples cost $12.50!", "it's   spaced\n\nout",
           "Zürich, naïve café — déjà vu 東京 🙂", "<|im_start|>user\nHi<|im_end|>\n", CHECK_TEXT]
# continuations the model generates greedily (the hf backend's generations, measured once)
GREEDY = [Loglikelihood("The capital of France is", " Paris.\n\nThe answer is"),
          Loglikelihood("def fibonacci(n):", "\n    if n == 0:\n        return 1")]


@dataclass(frozen=True)
class Made:
    artifact: Artifact
    output: StepOutput
    seconds: float

    @property
    def path(self) -> Path:
        return self.artifact.model_path


def make(kind: str, parent: Artifact, params: dict, label: str) -> Made:
    """What the recipe runner does with one step: check, run into a staging dir, commit."""
    step: Step = make_step(kind)
    checked = step.check(params, embedded.ensure_hf_dir())
    started = time.perf_counter()
    with artifacts.staging(kind) as out:
        output = step.run(parent, checked, 0, out)
        seconds = time.perf_counter() - started
        child = artifacts.commit(out, output.format, parameters=output.parameters,
                                 bits_per_weight=output.bits_per_weight, metadata=output.metadata)
    print(f"\n{label}: {seconds:.2f} s, {output.bits_per_weight:.4f} bits/weight")
    return Made(child, output, seconds)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loglikelihoods(backend, requests: list[Loglikelihood]) -> list:
    results = dict(backend.loglikelihood(requests, lambda k: None))
    return [results[i] for i in range(len(requests))]


def hellaswag_requests(docs: int = 10) -> list[Loglikelihood]:
    from harness import tasks as catalog
    from harness.taskkit.data import forced_source

    task = catalog.get_task("hellaswag")
    with forced_source("fixture"):
        dataset = task.load()
    return [r for instance in task.build(dataset, docs, 0, 1234) for r in instance.requests]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("artifacts")
    previous = os.environ.get("HARNESS_ARTIFACTS_DIR")
    os.environ["HARNESS_ARTIFACTS_DIR"] = str(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)  # ~1.2 GB of checkpoints
    if previous is None:
        os.environ.pop("HARNESS_ARTIFACTS_DIR", None)
    else:
        os.environ["HARNESS_ARTIFACTS_DIR"] = previous


@pytest.fixture(scope="module")
def parent(store: Path) -> Artifact:
    return artifacts.import_files(embedded.ensure_hf_dir(), "hf")


@pytest.fixture(scope="module")
def f32(parent: Artifact) -> Made:
    return make("export_gguf", parent, {}, "export F32")


@pytest.fixture(scope="module")
def f32_backend(f32: Made) -> Iterator[GGUFBackend]:
    backend = GGUFBackend(parse_model_spec(f"gguf:{f32.path}", GGUF_ARGS))
    backend.load()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory) -> Iterator[Path]:
    """llama.cpp's own float32 dequantisation of the shipped Q4_1 GGUF: what the export must equal."""
    path = tmp_path_factory.mktemp("llama_f32") / "model.gguf"
    quantize(embedded.gguf_path(), path, llama_cpp.LLAMA_FTYPE_ALL_F32, 2, True)
    yield path
    path.unlink()  # 540 MB: pytest keeps recent tmp dirs


@pytest.fixture(scope="module")
def quantized(f32: Made) -> dict[str, Made]:
    return {qtype: make("quantize_gguf", f32.artifact, {"type": qtype}, f"quantize {qtype}")
            for qtype in ("Q8_0", "Q4_0", "Q4_K_M")}


@pytest.fixture(scope="module")
def hf_tokenizer(parent: Artifact):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(parent.model_path))


# -- export ---------------------------------------------------------------------------------------


def test_export_reports_a_float32_conversion(f32: Made, parent: Artifact) -> None:
    from safetensors import safe_open

    with safe_open(str(parent.model_path / "model.safetensors"), framework="pt") as weights:
        in_checkpoint = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    assert f32.artifact.format == "gguf" and f32.output.relation == "converted"
    assert f32.output.parameters == in_checkpoint == N_WEIGHTS
    assert f32.output.bits_per_weight == 32.0
    assert f32.output.metadata == {"dtype": "F32", "tensor_types": {"F32": N_NORMS + N_MATRICES}}
    meta = read_metadata(f32.path)
    shipped = read_metadata(embedded.gguf_path())
    for key in ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon",
                "llama.rope.freq_base", "llama.rope.dimension_count", "llama.vocab_size", "tokenizer.ggml.model",
                "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token"):
        assert meta[key] == shipped[key], key
    assert meta["general.file_type"] == 0 and meta["tokenizer.ggml.pre"] == "smollm"


def test_export_is_bit_identical_to_llama_cpps_dequantisation(f32: Made, llama_f32: Path) -> None:
    """GGUF -> transformers (which un-permutes q/k) -> export (which permutes back) is lossless: every
    tensor has llama.cpp's own float32 bits, and the vocabulary arrays are the shipped ones."""
    ours, theirs = gguf.GGUFReader(str(f32.path)), gguf.GGUFReader(str(llama_f32))
    mine = {t.name: t for t in ours.tensors}
    reference = {t.name: t for t in theirs.tensors}
    assert set(mine) == set(reference) and "output.weight" not in mine  # tied embeddings
    for name, tensor in reference.items():
        assert mine[name].tensor_type == tensor.tensor_type and list(mine[name].shape) == list(tensor.shape), name
        assert np.array_equal(mine[name].data, tensor.data), name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.chat_template"):
        assert ours.fields[key].contents() == theirs.fields[key].contents(), key


def test_export_scores_as_the_hf_backend(f32_backend: GGUFBackend, parent: Artifact) -> None:
    requests = hellaswag_requests() + GREEDY
    hf = HFBackend(parse_model_spec(f"hf:{parent.model_path}"))
    try:
        expected = loglikelihoods(hf, requests)
    finally:
        hf.close()
    got = loglikelihoods(f32_backend, requests)
    deltas = [abs(a.logprob - b.logprob) for a, b in zip(expected, got)]
    print(f"\nhf vs exported F32 GGUF: {len(deltas)} continuations, max |Δ| {max(deltas):.2e}, median {np.median(deltas):.2e}")
    assert len(requests) == 40 + len(GREEDY)
    assert max(deltas) < F32_MAX_DELTA
    # greedy agreement: each continuation is (or is not) the argmax at every one of its tokens in both
    assert [a.is_greedy for a in expected] == [b.is_greedy for b in got]
    assert [a.is_greedy for a in expected[-len(GREEDY):]] == [True] * len(GREEDY)  # not vacuous


def test_export_generates_greedily(f32_backend: GGUFBackend) -> None:
    # what the hf backend generates for this prompt (measured once: hf generation costs ~10 s here)
    [(_, [text])] = list(f32_backend.generate([Generate(prompt="The capital of France is", max_tokens=8)], lambda k: None))
    assert text.startswith(" Paris.")


def test_export_has_the_chat_template_and_tokenizes_as_hf(f32: Made, f32_backend: GGUFBackend, hf_tokenizer) -> None:
    assert read_metadata(f32.path)["tokenizer.chat_template"] == hf_tokenizer.chat_template
    llama = f32_backend.load().llama
    for text in STRINGS:
        ours = llama.tokenize(text.encode(), add_bos=False, special=True)
        assert ours == hf_tokenizer.encode(text, add_special_tokens=False), text
    assert llama.tokenize(b"Hi", add_bos=True, special=True) == hf_tokenizer.encode("Hi")  # add_bos false: no bos
    assert llama.token_bos() == hf_tokenizer.bos_token_id and llama.token_eos() == hf_tokenizer.eos_token_id


def test_half_precision_export_keeps_norms_float32(parent: Artifact) -> None:
    made = make("export_gguf", parent, {"dtype": "f16"}, "export F16")
    assert made.output.relation == "quantized" and made.output.parameters == N_WEIGHTS
    assert made.output.metadata == {"dtype": "F16", "tensor_types": {"F16": N_MATRICES, "F32": N_NORMS}}
    assert made.output.bits_per_weight == pytest.approx(16.0042, abs=1e-4)  # 16 + the 35k float32 norm weights
    assert read_metadata(made.path)["general.file_type"] == 1


# -- quantize -------------------------------------------------------------------------------------


def test_q8_0_and_q4_0_types_and_bits(quantized: dict[str, Made]) -> None:
    q8, q4 = quantized["Q8_0"].output, quantized["Q4_0"].output
    assert q8.relation == q4.relation == "quantized" and q8.parameters == q4.parameters == N_WEIGHTS
    assert q8.metadata["type_counts"] == {"F32": N_NORMS, "Q8_0": N_MATRICES} and q8.metadata["fallbacks"] == 0
    assert q8.bits_per_weight == pytest.approx(8.5061, abs=1e-3)  # 8.5 + the float32 norms
    # llama.cpp gives the output matrix 6 bits; tied, that is token_embd, and Q6_K's 256-wide blocks
    # do not fit its 576-wide rows, so it falls back to Q8_0: 21% of the weights at 8.5 bits.
    assert q4.metadata["tensor_types"]["token_embd.weight"] == "Q8_0"
    assert q4.metadata["type_counts"] == {"F32": N_NORMS, "Q4_0": N_MATRICES - 1, "Q8_0": 1}
    assert (q4.metadata["fallbacks"], q4.metadata["shape_fallbacks"]) == (1, 0)
    assert q4.bits_per_weight == pytest.approx(5.3491, abs=1e-3)
    for output in (q8, q4):
        types = output.metadata["tensor_types"]
        assert len(types) == N_NORMS + N_MATRICES
        assert all(types[name] == "F32" for name in types if name.endswith("_norm.weight"))
    assert read_metadata(quantized["Q4_0"].path)["general.file_type"] == TYPES["Q4_0"][0]


def test_quantizing_twice_gives_the_same_bytes(quantized: dict[str, Made], f32: Made) -> None:
    again = make("quantize_gguf", f32.artifact, {"type": "Q4_0"}, "quantize Q4_0 again")
    assert sha256(again.path) == sha256(quantized["Q4_0"].path)
    assert again.artifact.artifact_id == quantized["Q4_0"].artifact.artifact_id  # one content address


def test_k_quant_falls_back_per_tensor(quantized: dict[str, Made]) -> None:
    made = quantized["Q4_K_M"].output
    types, k_types = made.metadata["tensor_types"], {"Q4_K", "Q5_K", "Q6_K"}
    # rows 576 wide (every matrix but ffn_down, 1536) do not split into 256-weight blocks: never a K type
    narrow = [name for name in types if not name.endswith(("_norm.weight", "ffn_down.weight"))]
    assert len(narrow) == made.metadata["shape_fallbacks"] == 181
    assert all(types[name] not in k_types for name in narrow)
    assert {types[n] for n in narrow} == {"Q5_0", "Q8_0"}  # Q4_K -> Q5_0, Q6_K (attn_v, token_embd) -> Q8_0
    assert {types[n] for n in types if n.endswith("ffn_down.weight")} == {"Q4_K", "Q6_K"}  # 1536 wide: K types
    assert made.metadata["fallback_types"] == {"Q5_0": 166, "Q6_K": 14, "Q8_0": 15}
    assert made.metadata["fallbacks"] == 195
    assert 5.5 < made.bits_per_weight < 6.5  # measured 6.17: more than Q4_0, the fallbacks cost bits


def test_quantize_refuses_a_quantized_parent(store: Path) -> None:
    shipped = artifacts.import_files(embedded.gguf_path(), "gguf")
    with artifacts.staging("refuse") as out, pytest.raises(UsageError, match="already quantized") as error:
        make_step("quantize_gguf").run(shipped, {"type": "Q4_0"}, 0, out)
    assert "\n" not in str(error.value) and "Q4_1" in str(error.value)


def test_quantizer_failure_is_one_line_with_llama_cpps_reason(f32: Made, tmp_path: Path) -> None:
    truncated = tmp_path / "in" / artifacts.GGUF_FILE
    truncated.parent.mkdir()
    with open(f32.path, "rb") as whole:
        truncated.write_bytes(whole.read(3_000_000))  # the header and the start of token_embd
    broken = Artifact("0" * 64, truncated.parent, "gguf", truncated.stat().st_size)
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="could not quantize") as error:
        make_step("quantize_gguf").run(broken, {"type": "Q8_0"}, 0, tmp_path / "out")
    assert "\n" not in str(error.value) and "not within the file bounds" in str(error.value)


def test_ftype_numbers_are_llama_cpps() -> None:
    for name, (ftype, _) in TYPES.items():
        assert getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}") == ftype, name


# -- check ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "params", "words"), [
    ("quantize_gguf", {"type": "Q9_0"}, ["quantize_gguf", "type", "Q8_0", "Q4_K_M"]),
    ("quantize_gguf", {"type": "IQ2_XS"}, ["quantize_gguf", "IQ2_XS", "needs an imatrix"]),
    ("quantize_gguf", {"type": "Q4_0", "bits": 4}, ["quantize_gguf", "unknown parameter", "bits"]),
    ("quantize_gguf", {}, ["quantize_gguf", "type", "required"]),
    ("quantize_gguf", {"type": "Q4_0", "threads": 0}, ["quantize_gguf", "threads"]),
    ("export_gguf", {"dtype": "F8"}, ["export_gguf", "dtype", "F32", "BF16"]),
    ("export_gguf", {"bits": 4}, ["export_gguf", "unknown parameter", "bits"]),
    ("export_gguf", {"pre": "nonsense"}, ["export_gguf", "pre", "smollm"]),
])
def test_check_refuses_in_one_line(kind: str, params: dict, words: list[str]) -> None:
    with pytest.raises(UsageError) as error:
        make_step(kind).check(params, embedded.ensure_hf_dir())
    message = str(error.value)
    assert "\n" not in message
    assert all(word in message for word in words), message


def test_check_fills_defaults_and_refuses_other_architectures(tmp_path: Path) -> None:
    assert make_step("export_gguf").check({}, embedded.ensure_hf_dir()) == {"dtype": "F32", "pre": "smollm"}
    assert make_step("quantize_gguf").check({"type": "q4_k_m"}, tmp_path) == {"type": "Q4_K_M", "threads": 1, "requantize": False}
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}')
    with pytest.raises(UsageError, match="GPT2LMHeadModel is not supported") as error:
        make_step("export_gguf").check({}, tmp_path)
    assert "\n" not in str(error.value) and "LlamaForCausalLM" in str(error.value)
