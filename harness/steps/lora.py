"""`lora_sft`: supervised fine-tuning of a LoRA adapter on chat examples, with trl's SFTTrainer.

The child is a peft adapter directory (adapter_model.safetensors, adapter_config.json whose
base_model_name_or_path is the parent's artifact directory, and the tokenizer files), which the
hf backend loads on top of its base; `merge` folds it into a full checkpoint.

Training runs trl's SFTTrainer as is (no hand-written loop): each example becomes a
conversational prompt-completion row (prompt = every turn before the last, completion = the
last, assistant, turn), so trl applies the tokenizer's chat template and computes the loss on the
completion tokens only (`completion_only_loss`, trl's default for prompt-completion rows). trl's
`assistant_only_loss` is not used: it needs a chat template with {% generation %} markers, which
SmolLM2's has not, and trl ships a training template for a fixed list of model families only.
So in a multi-turn conversation only the final assistant turn is trained on.

Determinism: the thread count is fixed (torch.set_num_threads, the `threads` parameter or the
CPU affinity count) and the trainer's seed and data_seed are the step's seed, so on CPU two runs
give the same loss curve (tests/unit/test_step_lora.py checks it to 1e-6). The thread count is
kept out of the step key when not given and recorded in the metadata: a different count changes
the float reductions, not what was asked for. On a machine whose cores are shared with other
jobs, threads=1 can be much faster: a busy neighbour stalls torch's OpenMP barriers (on 2 shared
cores a step took 13-28 s with 2 threads against 4-7 s with 1, measured back to back).

Throughput (benchmarks/lora_throughput.py, 8 steps of batch 2, max_length 256, SmolLM2-135M,
float32 CPU): 104.9 tokens/s against 102.2 for plain trl with 1 thread (1.03x), 186.3 against
176.3 with 2 threads on a quieter moment (1.06x): the step adds nothing measurable to trl.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.steps.base import Step, StepOutput, unknown_keys
from harness.steps.data import DATA_HELP, TrainingData, check_source, load_examples
from harness.store.artifacts import Artifact

KIND = "lora_sft"
DEFAULT_TARGETS = ("q_proj", "v_proj")
PARAMS: dict[str, str] = {
    "rank": "LoRA rank r, a positive integer (default 8)",
    "alpha": "LoRA alpha, a positive number (default 16)",
    "dropout": "LoRA dropout in [0, 1) (default 0.0)",
    "target_modules": "module names to adapt, a list (default [q_proj, v_proj]) or all-linear",
    "data": f"the training examples (required): {DATA_HELP}",
    "limit": "use the first N examples (default: all)",
    "steps": "optimizer steps to run (give steps or epochs; default 1 epoch)",
    "epochs": "passes over the examples, a positive number (give steps or epochs)",
    "learning_rate": "a positive number (default 2e-4)",
    "max_length": "tokens per example, longer ones truncated (default 512)",
    "batch_size": "examples per optimizer step (default 4)",
    "threads": "torch CPU threads (default: the CPU affinity count)",
    "log_every": "optimizer steps per point of the loss curve (default 1)",
}
DEFAULTS: dict[str, Any] = {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": list(DEFAULT_TARGETS),
                            "limit": None, "steps": None, "epochs": None, "learning_rate": 2e-4, "max_length": 512,
                            "batch_size": 4, "threads": None, "log_every": 1}


# -- parameters ------------------------------------------------------------------------------


def _bad(name: str, value: Any, expected: str) -> UsageError:
    return UsageError(f"step {KIND}: bad {name}={value!r}: expected {expected}")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(name, value, "a positive integer")
    return value


def _positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise _bad(name, value, "a positive number")
    return float(value)


def _dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise _bad("dropout", value, "a number in [0, 1)")
    return float(value)


def _targets(value: Any, model_dir: Path) -> list[str] | str:
    """The target modules, each one a module of the model (peft's rule: the name or a dotted suffix)."""
    if value == "all-linear":
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _bad("target_modules", value, "a non-empty list of module names, or all-linear")
    names = adaptable_modules(str(model_dir))
    for target in value:
        if not any(name == target or name.endswith("." + target) for name in names):
            leaves = sorted({name.rsplit(".", 1)[-1] for name in names})
            raise UsageError(f"step {KIND}: target_modules: the model has no module {target!r}; "
                             f"its adaptable modules are {', '.join(leaves)}")
    return sorted(dict.fromkeys(value))


@functools.lru_cache(maxsize=8)
def adaptable_modules(model_dir: str) -> tuple[str, ...]:
    """Names of the model's Linear / Embedding / Conv modules (what LoRA can adapt), read from a
    meta-device instance built from config.json: no weights are read, it takes about a second."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise UsageError(f"step {KIND}: cannot read the model config in {model_dir}: {str(error).splitlines()[0]}") from None
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    return tuple(name for name, module in model.named_modules() if name and isinstance(module, kinds))


def check_params(params: Mapping[str, Any], model_dir: Path) -> dict:
    unknown_keys(KIND, params, PARAMS)
    p = {**DEFAULTS, **params}
    checked: dict[str, Any] = {
        "data": check_source(KIND, p.get("data")),
        "rank": _positive_int("rank", p["rank"]),
        "alpha": _positive_number("alpha", p["alpha"]),
        "dropout": _dropout(p["dropout"]),
        "learning_rate": _positive_number("learning_rate", p["learning_rate"]),
        "max_length": _positive_int("max_length", p["max_length"]),
        "batch_size": _positive_int("batch_size", p["batch_size"]),
        "log_every": _positive_int("log_every", p["log_every"]),
        "limit": None if p["limit"] is None else _positive_int("limit", p["limit"]),
        "threads": None if p["threads"] is None else _positive_int("threads", p["threads"]),
    }
    if p["steps"] is not None and p["epochs"] is not None:
        raise UsageError(f"step {KIND}: give steps or epochs, not both (steps={p['steps']}, epochs={p['epochs']})")
    checked["steps"] = None if p["steps"] is None else _positive_int("steps", p["steps"])
    checked["epochs"] = None if p["epochs"] is None else _positive_number("epochs", p["epochs"])
    if checked["steps"] is None and checked["epochs"] is None:
        checked["epochs"] = 1.0
    checked["target_modules"] = _targets(p["target_modules"], model_dir)
    return checked


# -- training --------------------------------------------------------------------------------


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prompt_completion_rows(data: TrainingData) -> list[dict]:
    """trl's conversational prompt-completion rows: the loss is on the completion (the last turn)."""
    return [{"prompt": messages[:-1], "completion": messages[-1:]} for messages in data.examples]


def sft_config(params: Mapping[str, Any], seed: int, output_dir: str, use_cpu: bool) -> Any:
    """The SFTConfig of a run: plain float32, no checkpoints, no reporting, a log entry per `log_every` steps."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir, use_cpu=use_cpu, report_to="none", save_strategy="no", seed=seed, data_seed=seed,
        logging_steps=params["log_every"], logging_strategy="steps", bf16=False, fp16=False,
        activation_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=True,
        per_device_train_batch_size=params["batch_size"], gradient_accumulation_steps=1,
        learning_rate=params["learning_rate"], max_length=params["max_length"],
        max_steps=params["steps"] if params["steps"] is not None else -1,
        num_train_epochs=params["epochs"] if params["epochs"] is not None else 1.0,
        completion_only_loss=True, packing=False,
    )


def lora_config(params: Mapping[str, Any]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=params["rank"], lora_alpha=params["alpha"], lora_dropout=params["dropout"],
                      target_modules=params["target_modules"], bias="none", task_type="CAUSAL_LM")


def progress_callback() -> Any:
    """A rich progress bar on stderr over the optimizer steps, showing the last logged loss.

    Redrawn at each optimizer step (seconds apart on a CPU) rather than by rich's refresh thread,
    which would wake ten times a second beside torch's busy-waiting OpenMP workers for nothing."""
    from transformers import TrainerCallback

    from harness.core.progress import make_progress

    class LossProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = make_progress()
            self.bar.live.auto_refresh = False  # before start(): no refresh thread
            self.task: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.start()
            self.task = self.bar.add_task(f"{KIND} loss -", total=state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.update(self.task, completed=state.global_step, refresh=True)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.bar.update(self.task, description=f"{KIND} loss {logs['loss']:.4f}", refresh=True)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.bar.stop()

    return LossProgress()


def make_trainer(model_dir: str, params: Mapping[str, Any], seed: int, data: TrainingData, output_dir: str,
                 callbacks: list | None = None) -> Any:
    """An SFTTrainer over a float32 copy of the model at `model_dir` with a fresh LoRA adapter."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False  # no KV cache in training; silences transformers' warning
    config = sft_config(params, seed, output_dir, use_cpu=not torch.cuda.is_available())
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(prompt_completion_rows(data)),
                         processing_class=tokenizer, peft_config=lora_config(params), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log dict to stdout
    return trainer


def loss_curve(log_history: list[dict]) -> list[list[float]]:
    return [[int(entry["step"]), float(entry["loss"])] for entry in log_history if "loss" in entry and "step" in entry]


def train_tokens(log_history: list[dict]) -> int:
    """trl's running count of non-padding tokens seen (its `num_tokens` metric)."""
    counts = [entry["num_tokens"] for entry in log_history if "num_tokens" in entry]
    return int(counts[-1]) if counts else 0


def _save(trainer: Any, out: Path) -> None:
    trainer.model.save_pretrained(str(out), safe_serialization=True)
    trainer.processing_class.save_pretrained(str(out))
    # peft's generated model card names versions and paths only; it is not part of the checkpoint
    (out / "README.md").unlink(missing_ok=True)


class LoraSFT(Step):
    kind = KIND
    accepts = ("hf",)
    libraries = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")

    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        checked = check_params(params, model_dir)
        load_examples(KIND, checked["data"], checked["limit"])  # a bad JSONL line is refused before any step runs
        return checked

    def data_fingerprint(self, params: Mapping[str, Any]) -> str | None:
        return load_examples(KIND, params["data"], params.get("limit")).fingerprint

    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        import torch
        import trl

        data = load_examples(KIND, params["data"], params.get("limit"))
        threads = params.get("threads") or cpu_threads()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with tempfile.TemporaryDirectory(prefix="harness-lora-") as scratch:
                trainer = make_trainer(str(parent.path), params, seed, data, scratch, [progress_callback()])
                started = time.perf_counter()
                trainer.train()
                seconds = time.perf_counter() - started
                _save(trainer, out)
        finally:
            torch.set_num_threads(previous_threads)
        history = trainer.state.log_history
        tokens = train_tokens(history)
        trainable, total = trainer.model.get_nb_trainable_parameters()
        metadata = {
            "loss_curve": loss_curve(history), "train_tokens": tokens, "tokens_per_s": round(tokens / seconds, 2),
            "train_seconds": round(seconds, 3), "trainable_parameters": int(trainable), "total_parameters": int(total),
            "optimizer_steps": int(trainer.state.global_step), "examples": len(data.examples), "data_source": data.source,
            "threads": threads, "device": str(trainer.args.device), "loss": "completion-only (last assistant turn)",
            "trainer": f"trl.SFTTrainer {trl.__version__}",
        }
        return StepOutput(format="hf-adapter", relation="adapter", parameters=int(trainable), metadata=metadata,
                          data_fingerprint=data.fingerprint)
