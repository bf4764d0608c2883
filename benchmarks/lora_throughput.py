"""LoRA training throughput: the `lora_sft` step against the same configuration as plain trl.

Both train the embedded SmolLM2-135M-Instruct (float32, CPU) on the same GSM8K train examples
with the same hyperparameters: rank 8 on q_proj/v_proj, batch 2, max_length 256, learning rate
1e-3, float32, no activation checkpointing, seed 1234. "Plain trl" is SFTTrainer + SFTConfig +
LoraConfig written out here, with trl's own tqdm bar and none of our code; the step is
`LoraSFT.run` (its rich bar, its data rows). Tokens per second = trl's count of non-padding
tokens trained on over the wall time of `trainer.train()` in both cases (the step's
`tokens_per_s`), so model loading and saving are out of the ratio; the step's end-to-end time is
printed too. Rounds alternate plain / step so that a busy neighbour on a shared machine hits both.

    .venv/bin/python -m benchmarks.lora_throughput [--steps 8] [--threads 1] [--repeat 1]

Measured on 2 CPU cores shared with other jobs: --threads 1 --repeat 2: plain trl 102.2 tok/s,
lora_sft 104.9 tok/s, ratio 1.03x; --threads 2 (one round, a quieter moment): 176.3 against
186.3, 1.06x. Both give the same loss curve (1.696 ... 1.304).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from harness.backends import embedded
from harness.steps.data import load_examples
from harness.steps.lora import LoraSFT, cpu_threads
from harness.store import artifacts

SEED = 1234


def plain_trl(model_dir: str, examples: list, steps: int) -> float:
    """Tokens per second of trl's SFTTrainer with the step's configuration, none of our code."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in examples]
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(output_dir=scratch, use_cpu=True, report_to="none", save_strategy="no", seed=SEED,
                           data_seed=SEED, logging_steps=1, bf16=False, activation_checkpointing=False,
                           dataloader_num_workers=0, dataloader_pin_memory=False, per_device_train_batch_size=2,
                           learning_rate=1e-3, max_length=256, max_steps=steps)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), args=config,
                             train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
                             peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                    task_type="CAUSAL_LM"))
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e][-1]
    return tokens / seconds


def ours(parent: artifacts.Artifact, steps: int, threads: int) -> tuple[float, float]:
    """(tokens per second in training, end-to-end seconds) of the lora_sft step."""
    step = LoraSFT()
    params = step.check({"data": "task:gsm8k", "limit": 2 * steps, "steps": steps, "batch_size": 2,
                         "max_length": 256, "learning_rate": 1e-3, "threads": threads}, parent.path)
    with artifacts.staging("bench") as out:
        started = time.perf_counter()
        output = step.run(parent, params, SEED, out)
        return output.metadata["tokens_per_s"], time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=cpu_threads())
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as store:
        os.environ["HARNESS_ARTIFACTS_DIR"] = store
        parent = artifacts.import_files(embedded.ensure_hf_dir(), "hf")
        examples = load_examples("lora_sft", "task:gsm8k", 2 * args.steps).examples
        plain, step, wall = [], [], []
        for round_ in range(args.repeat):
            plain.append(plain_trl(str(parent.path), examples, args.steps))
            tokens_per_s, seconds = ours(parent, args.steps, args.threads)
            step.append(tokens_per_s)
            wall.append(seconds)
            print(f"round {round_ + 1}: plain trl {plain[-1]:.1f} tok/s, lora_sft step {step[-1]:.1f} tok/s "
                  f"(end to end {seconds:.1f} s)", flush=True)
    p, s = statistics.median(plain), statistics.median(step)
    print(f"threads={args.threads} steps={args.steps}: plain trl {p:.1f} tok/s, lora_sft {s:.1f} tok/s, "
          f"ratio {s / p:.2f}x (median of {args.repeat})")


if __name__ == "__main__":
    main()
