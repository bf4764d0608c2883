"""The lora_sft, merge and quantize_torch steps on the real embedded model (SmolLM2-135M-Instruct), no mocks.

Module-scoped fixtures train once: 8 optimizer steps of batch 2 over 16 GSM8K train examples
(the fixture's), max_length 256, learning rate 1e-3, one torch thread. One thread because this
machine's 2 cores are shared: with 2 threads, a busy neighbour stalls torch's OpenMP barriers and
a step took 13-28 s against 4-7 s on one thread (measured back to back). The children are loaded
back through the hf backend (HFBackend.load), the code path an evaluation uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.backends import embedded
from harness.backends.base import ModelSpec
from harness.backends.hf.backend import HFBackend
from harness.core.errors import UsageError
from harness.steps.base import StepOutput, make_step
from harness.store import artifacts
from harness.store.artifacts import Artifact
from harness.store.fingerprint import dir_fingerprint

SEED = 1234
LORA = {"data": "task:gsm8k", "limit": 16, "steps": 8, "batch_size": 2, "max_length": 256, "learning_rate": 1e-3,
        "threads": 1}
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nA baker has 12 eggs and uses 5. How many are left?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_ARTIFACTS_DIR", str(tmp_path_factory.mktemp("artifacts")))
        yield


@pytest.fixture(scope="module")
def parent(store) -> Artifact:
    return artifacts.import_files(embedded.ensure_hf_dir(), "hf")


def run_step(kind: str, parent: Artifact, params: dict) -> tuple[Artifact, StepOutput, dict]:
    """check then run then commit, as the recipe runner does."""
    step = make_step(kind)
    checked = step.check(params, parent.path)
    with artifacts.staging(kind) as out:
        output = step.run(parent, checked, SEED, out)
        child = artifacts.commit(out, output.format, parameters=output.parameters,
                                 bits_per_weight=output.bits_per_weight, metadata=output.metadata)
    return child, output, checked


@pytest.fixture(scope="module")
def adapter(parent: Artifact) -> tuple[Artifact, StepOutput, dict]:
    return run_step("lora_sft", parent, LORA)


@pytest.fixture(scope="module")
def merged(adapter) -> Artifact:
    return run_step("merge", adapter[0], {})[0]


@pytest.fixture(scope="module")
def int8(parent: Artifact) -> tuple[Artifact, StepOutput, dict]:
    return run_step("quantize_torch", parent, {"scheme": "int8"})


def backend_logits(path: Path) -> list[torch.Tensor]:
    """Logits of PROMPTS from the model the hf backend loads for `path`."""
    backend = HFBackend(ModelSpec("hf", str(path), {}))
    state = backend.load()
    with torch.inference_mode():
        logits = [state.model(**state.tokenizer(p, return_tensors="pt")).logits[0].float() for p in PROMPTS]
    backend.close()
    return logits


@pytest.fixture(scope="module")
def parent_logits(parent: Artifact) -> list[torch.Tensor]:
    return backend_logits(parent.path)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


# -- lora_sft ----------------------------------------------------------------------------------


def test_lora_lowers_the_training_loss(adapter) -> None:
    child, output, _ = adapter
    curve = output.metadata["loss_curve"]
    assert [step for step, _ in curve] == list(range(1, 9))
    first, last_two = curve[0][1], (curve[-1][1] + curve[-2][1]) / 2
    print(f"loss curve {[round(loss, 4) for _, loss in curve]}; {output.metadata['tokens_per_s']} tokens/s")
    assert last_two < first, curve
    assert output.format == "hf-adapter" and output.relation == "adapter"
    assert output.metadata["trainer"].startswith("trl.SFTTrainer ")
    assert output.metadata["train_tokens"] > 16 * 50 and output.metadata["tokens_per_s"] > 0
    # 30 layers of rank-8 A and B on q_proj (576 -> 576) and v_proj (576 -> 192)
    assert output.metadata["trainable_parameters"] == 30 * 8 * ((576 + 576) + (576 + 192))
    assert child.format == "hf-adapter"


def test_adapter_files_and_lineage(adapter, parent: Artifact) -> None:
    child, output, checked = adapter
    names = {p.name for p in child.path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((child.path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(parent.path)
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (8, 16, ["q_proj", "v_proj"])
    # the data fingerprint is known at check time, before training
    assert make_step("lora_sft").data_fingerprint(checked) == output.data_fingerprint
    assert len(output.data_fingerprint) == 64


def test_same_seed_same_loss_curve(adapter, parent: Artifact) -> None:
    again, output, _ = run_step("lora_sft", parent, LORA)
    first = adapter[1].metadata["loss_curve"]
    second = output.metadata["loss_curve"]
    assert len(first) == len(second)
    for (step_a, loss_a), (step_b, loss_b) in zip(first, second, strict=True):
        assert step_a == step_b and abs(loss_a - loss_b) <= 1e-6
    assert again.artifact_id == adapter[0].artifact_id  # the same bytes: one content address


# -- hf backend on an adapter, merge ---------------------------------------------------------


def test_backend_fingerprints_an_adapter_with_its_base(adapter, parent: Artifact) -> None:
    backend = HFBackend(ModelSpec("hf", str(adapter[0].path), {}))
    assert backend.source.adapter_base == str(parent.path.resolve())
    from harness.core.hashing import sha256_json

    expected = sha256_json({"adapter": dir_fingerprint(adapter[0].path), "base": dir_fingerprint(parent.path)})
    assert backend.weights_fingerprint() == expected != dir_fingerprint(parent.path)


def test_merged_logits_equal_adapter_logits(adapter, merged: Artifact, parent_logits: list[torch.Tensor]) -> None:
    on_adapter = backend_logits(adapter[0].path)
    on_merged = backend_logits(merged.path)
    print(f"max |Δ logit| merged vs adapter {max_diff(on_merged, on_adapter):.3g}, "
          f"adapter vs parent {max_diff(on_adapter, parent_logits):.3g}")
    # measured: max |Δ logit| merged vs adapter 6.0e-5 on logits of magnitude ~20 (float32 rounding of
    # (W + BA) x against W x + B(A x)), against 2.5 between the adapter and its parent: it did change the model
    assert max_diff(on_merged, on_adapter) < 1e-4
    assert max_diff(on_adapter, parent_logits) > 1e-2
    assert merged.format == "hf" and (merged.path / "model.safetensors").is_file()


# -- quantize_torch ----------------------------------------------------------------------------


def test_int8_loads_through_the_backend_close_to_its_parent(int8, parent_logits: list[torch.Tensor]) -> None:
    child, output, _ = int8
    assert json.loads((child.path / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    on_int8 = backend_logits(child.path)
    on_parent = parent_logits
    # measured: max |Δ logit| 1.57 over logits of magnitude ~20, the same top-1 token at 37 of 38 positions
    assert max_diff(on_int8, on_parent) < 3.0
    same_top1 = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(on_int8, on_parent, strict=True))
    assert same_top1 >= 0.9 * sum(len(a) for a in on_parent)
    # 8 bits plus a float32 scale and an int8 zero point per row of 576 or 1536 weights: 8.06 measured
    print(f"int8: max |Δ logit| vs parent {max_diff(on_int8, on_parent):.3g}, top-1 agreement "
          f"{same_top1}/{sum(len(a) for a in on_parent)}, bits/weight {output.bits_per_weight}, "
          f"all {output.metadata['bits_per_parameter_all']}")
    assert 8.0 < output.bits_per_weight < 8.1
    assert output.metadata["bits_per_parameter_all"] > 12  # the float32 embedding (tied lm_head) is kept
    assert child.bits_per_weight == output.bits_per_weight and child.format == "hf-torchao"


def test_int4_is_refused_or_runs(parent: Artifact) -> None:
    from harness.steps.torch_quant import int4_cpu_problem

    step = make_step("quantize_torch")
    if int4_cpu_problem() is None:
        assert step.check({"scheme": "int4"}, parent.path) == {"scheme": "int4"}
    else:
        with pytest.raises(UsageError, match="quantize_torch: scheme=int4: torchao's int4 weight-only does not run"):
            step.check({"scheme": "int4"}, parent.path)


# -- check() refusals ------------------------------------------------------------------------


def _refusal(kind: str, params: dict, model_dir: Path) -> str:
    with pytest.raises(UsageError) as caught:
        make_step(kind).check(params, model_dir)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"step {kind}"), message
    return message


@pytest.mark.parametrize(("params", "expected"), [
    ({"data": "task:gsm8k", "rnak": 4}, "unknown parameter(s) rnak"),
    ({"data": "task:gsm8k", "rank": 0}, "bad rank=0: expected a positive integer"),
    ({"data": "task:gsm8k", "rank": "8"}, "bad rank='8'"),
    ({"data": "task:gsm8k", "dropout": 1.5}, "bad dropout=1.5"),
    ({"data": "task:gsm8k", "steps": 3, "epochs": 1}, "give steps or epochs, not both"),
    ({"data": "task:gsm8k", "target_modules": ["q_projx"]}, "no module 'q_projx'; its adaptable modules are "
                                                              "down_proj, embed_tokens, gate_proj, k_proj, lm_head"),
    ({}, "parameter data is required"),
    ({"data": "task:hellaswag"}, "no training split for task 'hellaswag'"),
    ({"data": "/nonexistent/train.jsonl"}, "data=/nonexistent/train.jsonl: no such file"),
    ({"data": "task:gsm8k", "limit": 100000}, "limit=100000 but data=task:gsm8k has only"),
])
def test_lora_check_refusals(params: dict, expected: str) -> None:
    assert expected in _refusal("lora_sft", params, embedded.ensure_hf_dir())


@pytest.mark.parametrize(("lines", "expected"), [
    (['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}', "{not json"],
     ":2: not JSON"),
    (['{"messages": [{"content": "hi"}, {"role": "assistant", "content": "hello"}]}'], ":1: message 1 has role None"),
    (['{"messages": [{"role": "user", "content": "hi"}]}'], ":1: the last message is not the assistant's"),
    (['{"text": "hi"}'], ':1: expected {"messages"'),
])
def test_lora_check_refuses_a_bad_jsonl_line(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _refusal("lora_sft", {"data": str(path)}, embedded.ensure_hf_dir())
    assert f"{path}{expected}" in message


def test_jsonl_data_is_read_and_fingerprinted(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"}]}
    path.write_text(json.dumps(row) + "\n\n" + json.dumps(row) + "\n", encoding="utf-8")
    step = make_step("lora_sft")
    checked = step.check({"data": str(path), "limit": 2}, embedded.ensure_hf_dir())
    assert checked["epochs"] == 1.0 and checked["steps"] is None and checked["target_modules"] == ["q_proj", "v_proj"]
    from harness.core.hashing import sha256_json

    assert step.data_fingerprint(checked) == sha256_json([row["messages"]] * 2)


def test_merge_and_quantize_refuse_unknown_parameters() -> None:
    assert "unknown parameter(s) alpha" in _refusal("merge", {"alpha": 1}, embedded.ensure_hf_dir())
    assert "bad scheme='int3'" in _refusal("quantize_torch", {"scheme": "int3"}, embedded.ensure_hf_dir())
