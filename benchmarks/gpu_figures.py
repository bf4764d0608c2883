"""Figures for a GPU check: the in-process serving bench (hf backend) and a LoRA training step.

Two functions, imported by benchmarks/gpu_check.py, neither of which touches the results
database (nothing here imports duckdb, directly or through harness.bench.runner,
harness.store.db or harness.run.evaluator):

- `serving_figures`: harness/bench's in-process engine (make_engine -> ThreadEngine over
  HFRunner, static batches), closed-loop load at each concurrency (run_level), metrics by
  `summarize`; plus the decode memory-bandwidth utilisation (formula in BANDWIDTH_FORMULA).
- `lora_figures`: the recipe's `lora_sft` step (trl's SFTTrainer) on the model; when trl or
  datasets cannot be imported (or the step fails), the same LoRA (peft, r=8, alpha=16,
  q_proj/v_proj) trained by a plain torch loop on random token batches.

    .venv/bin/python -m benchmarks.gpu_figures   # a tiny random Llama on CPU, float32
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

HBM_PEAK_BYTES_PER_S = 4.8e12  # H200 HBM3e
BANDWIDTH_FORMULA = (
    "bytes_per_step = weight_bytes + kv_bytes_per_token * mean_context_tokens * concurrency; "
    "weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) (read once per decode step); "
    "kv_bytes_per_token = 2 * num_hidden_layers * num_key_value_heads * head_dim * element_size; "
    "mean_context_tokens = input_len + output_len / 2 (mean over the decode steps); "
    "steps_per_s = 1000 / tpot_ms_mean (one step decodes one token of each of the `concurrency` rows); "
    "utilisation = bytes_per_step * steps_per_s / 4.8e12 (H200 HBM3e peak)"
)
RECIPE_PATH = "recipe step (trl SFTTrainer)"
PLAIN_PATH = "peft + plain torch loop"


# -- serving ---------------------------------------------------------------------------------


def _model_geometry(model: Any) -> dict:
    """Weight bytes and KV-cache bytes per token of a transformers causal LM."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    element = next(model.parameters()).element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"num_hidden_layers": layers, "num_key_value_heads": kv_heads, "head_dim": head_dim,
            "element_size": element, "weight_bytes": int(weight_bytes),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "kv_bytes_per_token": 2 * layers * kv_heads * head_dim * element}


def _level_figures(summary: Any, geometry: dict, concurrency: int, input_len: int, output_len: int) -> dict:
    mean_context = input_len + output_len / 2
    bytes_per_step = geometry["weight_bytes"] + geometry["kv_bytes_per_token"] * mean_context * concurrency
    tpot_mean = summary.tpot_ms.mean
    steps_per_s = 1000.0 / tpot_mean if tpot_mean else None
    utilisation = bytes_per_step * steps_per_s / HBM_PEAK_BYTES_PER_S if steps_per_s else None
    return {
        "concurrency": concurrency, "requests": summary.requests, "completed": summary.completed,
        "failed": summary.failed, "errors": summary.errors, "output_tokens": summary.output_tokens,
        "duration_s": summary.duration_s,
        "ttft_ms_p50": summary.ttft_ms.p50, "ttft_ms_p99": summary.ttft_ms.p99, "ttft_ms_mean": summary.ttft_ms.mean,
        "tpot_ms_p50": summary.tpot_ms.p50, "tpot_ms_p99": summary.tpot_ms.p99, "tpot_ms_mean": tpot_mean,
        "output_tokens_per_s": summary.output_tokens_per_s, "peak_memory_mb": summary.peak_memory_mb,
        "mean_context_tokens": mean_context, "bytes_per_decode_step": bytes_per_step,
        "decode_steps_per_s": steps_per_s, "bandwidth_bytes_per_s": bytes_per_step * steps_per_s if steps_per_s else None,
        "bandwidth_utilisation": utilisation, "summary": summary.as_json(),
    }


async def _serve(spec: str, model_args: str, concurrencies: list[int], n_prompts: int, input_len: int,
                 output_len: int) -> dict:
    from harness.bench.datasets import random_prompts
    from harness.bench.inprocess import make_engine
    from harness.bench.load import Bounds, LoadLevel, run_level
    from harness.bench.metrics import summarize

    engine, tokenizer = make_engine(spec, model_args, ignore_eos=True, max_batch=max(concurrencies), tokenizer_name=None)
    try:
        geometry = _model_geometry(engine.runner.state.model)
        prompts = random_prompts(tokenizer, n_prompts, input_len, output_len, seed=0)
        warmup = random_prompts(tokenizer, max(concurrencies), input_len, output_len, seed=1)
        levels = []
        for c in concurrencies:
            engine.set_max_batch(c)
            engine.reset_peak_memory()
            timelines = await run_level(engine, prompts, LoadLevel(c), Bounds(num_requests=n_prompts),
                                        warmup_prompts=warmup[:c], prefix=f"c{c}")
            summary = summarize(timelines, concurrency=c, rate=None, peak_memory_mb=engine.peak_memory_mb())
            levels.append(_level_figures(summary, geometry, c, input_len, output_len))
        return {"describe": engine.describe(), "tokenizer": tokenizer.name, **geometry, "levels": levels}
    finally:
        await engine.aclose()


def serving_figures(model_dir: str, device: str, dtype: str, concurrencies: list[int], n_prompts: int,
                    input_len: int, output_len: int) -> dict:
    """The in-process serving bench on the hf backend (no DuckDB store): per concurrency, TTFT and
    TPOT p50/p99 (ms), output tokens/s, peak memory (MB) and decode bandwidth utilisation."""
    spec, model_args = f"hf:{model_dir}", f"device={device},dtype={dtype}"
    started = time.perf_counter()
    result = asyncio.run(_serve(spec, model_args, list(concurrencies), n_prompts, input_len, output_len))
    _free_memory()
    return {"model": spec, "model_args": model_args, "device": device, "dtype": dtype, "ignore_eos": True,
            "concurrencies": list(concurrencies), "n_prompts": n_prompts, "input_len": input_len,
            "output_len": output_len, "hbm_peak_bytes_per_s": HBM_PEAK_BYTES_PER_S,
            "bandwidth_formula": BANDWIDTH_FORMULA, "wall_s": time.perf_counter() - started, **result}


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- LoRA ------------------------------------------------------------------------------------


def _reset_peak(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(cuda: bool) -> tuple[float, str]:
    if cuda:
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    from harness.bench.inprocess import cpu_peak_rss_mb

    return cpu_peak_rss_mb(), "peak RSS of the process (never goes down)"


def _chat_jsonl(path: Path, n: int, seq_len: int) -> None:
    """n conversations of a short user turn and an assistant turn long enough to fill seq_len tokens
    (truncation keeps the start, so a prompt longer than seq_len would leave no completion to train on)."""
    import random

    rng = random.Random(0)
    words = ("the", "model", "learns", "a", "small", "answer", "to", "every", "question", "here", "with", "care",
             "numbers", "seven", "eleven", "plus", "minus", "equals", "so", "then")
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            question = f"Question {i}: " + " ".join(rng.choice(words) for _ in range(4))  # short: the loss is on the answer
            answer = " ".join(rng.choice(words) for _ in range(max(4, seq_len))) + f" #### {i}"
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": messages}) + "\n")


def _lora_recipe(model_dir: str, steps: int, seq_len: int, batch_size: int, cuda: bool) -> dict:
    """The `lora_sft` step as a recipe runs it, on an artifact of model_dir in a temporary store."""
    from harness.steps.lora import LoraSFT
    from harness.store import artifacts

    previous = os.environ.get("HARNESS_ARTIFACTS_DIR")
    with tempfile.TemporaryDirectory(prefix="gpu-figures-lora-") as scratch:
        os.environ["HARNESS_ARTIFACTS_DIR"] = str(Path(scratch) / "artifacts")
        try:
            data = Path(scratch) / "chat.jsonl"
            _chat_jsonl(data, steps * batch_size, seq_len)
            parent = artifacts.import_files(Path(model_dir), "hf")
            step = LoraSFT()
            params = step.check({"data": str(data), "steps": steps, "batch_size": batch_size, "max_length": seq_len},
                                parent.path)
            _reset_peak(cuda)
            with artifacts.staging("gpu-figures") as out:
                started = time.perf_counter()
                output = step.run(parent, params, 1234, out)
                wall = time.perf_counter() - started
            peak, peak_source = _peak_mb(cuda)
        finally:
            if previous is None:
                os.environ.pop("HARNESS_ARTIFACTS_DIR", None)
            else:
                os.environ["HARNESS_ARTIFACTS_DIR"] = previous
    meta = output.metadata
    curve = meta["loss_curve"]
    return {"tokens_per_s": meta["tokens_per_s"], "train_tokens": meta["train_tokens"],
            "tokens_counted": "trl num_tokens (non-padding) over trainer.train() wall time",
            "train_seconds": meta["train_seconds"], "step_wall_s": wall, "peak_memory_mb": peak,
            "peak_memory_source": peak_source, "loss_first": curve[0][1] if curve else None,
            "loss_last": curve[-1][1] if curve else None, "loss_curve": curve,
            "optimizer_steps": meta["optimizer_steps"], "trainable_parameters": meta["trainable_parameters"],
            "total_parameters": meta["total_parameters"], "train_device": meta["device"],
            "train_dtype": "float32 (the step trains in float32)", "trainer": meta["trainer"]}


def _lora_plain(model_dir: str, dtype: str, steps: int, seq_len: int, batch_size: int, cuda: bool) -> dict:
    """The step's default LoRA (r=8, alpha=16, q_proj/v_proj) by AdamW on random token batches."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.steps.lora import DEFAULTS

    device = torch.device("cuda" if cuda else "cpu")
    _reset_peak(cuda)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)
    model.config.use_cache = False
    config = LoraConfig(r=DEFAULTS["rank"], lora_alpha=DEFAULTS["alpha"], lora_dropout=DEFAULTS["dropout"],
                        target_modules=list(DEFAULTS["target_modules"]), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    model.train()
    trainable, total = model.get_nb_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=DEFAULTS["learning_rate"])
    generator = torch.Generator().manual_seed(1234)
    vocab = int(model.config.vocab_size)
    losses: list[float] = []
    step_s: list[float] = []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator).to(device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # a host sync: the step is done
        step_s.append(time.perf_counter() - t0)
    peak, peak_source = _peak_mb(cuda)
    tokens = steps * batch_size * seq_len
    seconds = sum(step_s)
    after_first = (steps - 1) * batch_size * seq_len / sum(step_s[1:]) if steps > 1 and sum(step_s[1:]) > 0 else None
    del model, optimizer
    return {"tokens_per_s": tokens / seconds if seconds > 0 else None, "tokens_per_s_after_first_step": after_first,
            "train_tokens": tokens, "tokens_counted": "steps * batch_size * seq_len (no padding) over the step times",
            "train_seconds": seconds, "step_seconds": step_s, "peak_memory_mb": peak, "peak_memory_source": peak_source,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "losses": losses, "optimizer_steps": steps, "trainable_parameters": int(trainable),
            "total_parameters": int(total), "train_device": str(device),
            "train_dtype": f"{dtype} weights" + (", bfloat16 autocast" if cuda else ""),
            "trainer": f"torch.optim.AdamW lr={DEFAULTS['learning_rate']}"}


def lora_figures(model_dir: str, device: str, dtype: str, steps: int, seq_len: int, batch_size: int) -> dict:
    """Tokens/s, peak memory and first/last loss of LoRA training on model_dir: the recipe's
    lora_sft step when trl and datasets import, else peft + a plain torch loop (`path` says which)."""
    import torch

    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but torch sees no CUDA device")
    head = {"model_dir": model_dir, "device": device, "dtype": dtype, "steps": steps, "seq_len": seq_len,
            "batch_size": batch_size, "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}}
    missing = []
    for name in ("trl", "datasets"):
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - any import failure means the recipe path cannot run
            missing.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if not missing:
        try:
            figures = _lora_recipe(model_dir, steps, seq_len, batch_size, cuda)
            _free_memory()
            return {**head, "path": RECIPE_PATH, **figures}
        except Exception as exc:  # noqa: BLE001 - still give the LoRA figures, and say why
            reason = f"recipe step failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            _free_memory()
    else:
        reason = "trl not importable" if any(m.startswith("trl") for m in missing) else "datasets not importable"
        reason += ": " + "; ".join(missing)
    figures = _lora_plain(model_dir, dtype, steps, seq_len, batch_size, cuda)
    _free_memory()
    return {**head, "path": f"{PLAIN_PATH}: {reason}", **figures}


# -- smoke check -----------------------------------------------------------------------------


def tiny_model(directory: Path) -> Path:
    """A 2-layer random Llama with the embedded tokenizer's files, saved to `directory`."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.backends import embedded

    source = embedded.ensure_hf_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file() and not (directory / name).is_file():
            shutil.copy(source / name, directory / name)
    return directory


def main() -> None:
    import sys

    with tempfile.TemporaryDirectory(prefix="gpu-figures-tiny-") as scratch:
        model_dir = str(tiny_model(Path(scratch) / "tiny"))
        serving = serving_figures(model_dir, "cpu", "float32", [1, 2], 4, 16, 8)
        lora = lora_figures(model_dir, "cpu", "float32", 2, 64, 2)
    for level in serving["levels"]:
        print(json.dumps({k: v for k, v in level.items() if k != "summary"}, default=str))
    print(json.dumps({k: v for k, v in lora.items() if k not in ("loss_curve", "losses")}, default=str))
    print("duckdb imported:", "duckdb" in sys.modules)


if __name__ == "__main__":
    main()
