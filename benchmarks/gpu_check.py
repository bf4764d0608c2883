"""GPU check: numeric agreement and evaluation-path throughput of the `hf` backend, plus the
serving and LoRA figures of benchmarks/gpu_figures.py, on models built from a config.

    python -m benchmarks.gpu_check --out DIR [--size tiny|full] [--device auto|cpu|cuda] [--tokenizer DIR]

Writes DIR/gpu_check.json and DIR/gpu_check.md. The models are `LlamaForCausalLM(config)` with
seeded random weights (torch.manual_seed(0)) and the real SmolLM2 tokenizer: the figures are
honest for speed and for numeric agreement between devices and dtypes, not for accuracy.

Sizes: tiny = a 2-layer, 64-hidden Llama (CPU-friendly, for debugging and CI); full = the
SmolLM2-135M architecture (config.json of the tokenizer dir) and a 1B-class Llama.
Every part is isolated: one that fails records {"error": ...} and the others still run.
The script imports nothing that pulls in duckdb (checked: "duckdb_imported" in the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu_eval_path import build_requests, part_agreement, part_throughput

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "config.json")
# Packages the device machine lacks (or may lack); recorded per part when a part imports them.
OPTIONAL_MODULES = ("duckdb", "pydantic", "datasets", "gguf", "trl", "lm_eval", "vllm", "llama_cpp")
# SmolLM2-135M, used when the tokenizer dir carries no config.json.
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
# What the 1B-class and tiny models share with SmolLM2 (its tokenizer's ids, tied embeddings).
_SHARED = {k: SMOLLM2_135M[k] for k in ("rms_norm_eps", "tie_word_embeddings", "vocab_size", "bos_token_id", "eos_token_id",
                                        "pad_token_id")}
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0, **_SHARED}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048, "rope_theta": 100000.0, **_SHARED}
SERVING = {
    "tiny": {"concurrencies": [1, 2], "n_prompts": 4, "input_len": 32, "output_len": 8},
    "full": {"concurrencies": [1, 8, 32], "n_prompts": 64, "input_len": 512, "output_len": 128},
}
LORA = {"tiny": {"steps": 3, "seq_len": 64, "batch_size": 2}, "full": {"steps": 20, "seq_len": 512, "batch_size": 8}}
WEIGHTS_NOTE = (
    "weights are random (LlamaForCausalLM(config) after torch.manual_seed(0)) with the real SmolLM2 "
    "tokenizer: honest for speed and numeric agreement, not for accuracy"
)


# -- models ----------------------------------------------------------------------------------


def tokenizer_source(given: str | None) -> Path:
    if given:
        return Path(given)
    from harness.backends.embedded import ensure_hf_dir

    return ensure_hf_dir()


def build_model(out_dir: Path, arch: dict, tokenizer_dir: Path, device: str, save_dtype: str) -> str:
    """A seeded random Llama saved with the tokenizer; returns the directory."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    arch = dict(arch)
    rope_theta = arch.pop("rope_theta", None)
    config = LlamaConfig(**arch)
    if rope_theta is not None:
        config.rope_parameters = {"rope_theta": rope_theta, "rope_type": "default"}
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model = model.to(getattr(torch, save_dtype)).to("cpu")
    model.save_pretrained(str(out_dir), safe_serialization=True)
    del model
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out_dir))
    return str(out_dir)


def base_arch(tokenizer_dir: Path) -> dict:
    """The SmolLM2-135M architecture from the tokenizer dir's config.json, else the built-in copy."""
    path = tokenizer_dir / "config.json"
    if not path.is_file():
        return dict(SMOLLM2_135M)
    config = json.loads(path.read_text(encoding="utf-8"))
    keys = set(SMOLLM2_135M) - {"rope_theta"}
    arch = {k: config[k] for k in keys if k in config}
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    arch["rope_theta"] = theta if theta is not None else SMOLLM2_135M["rope_theta"]
    return {**SMOLLM2_135M, **arch}


def part_figures(function: str, **kwargs: Any) -> dict:
    import importlib

    module = importlib.import_module("benchmarks.gpu_figures")
    fn = getattr(module, function, None)
    if fn is None:
        raise RuntimeError(f"benchmarks.gpu_figures has no {function}")
    return fn(**kwargs)


# -- report ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:200]
    return str(value)


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [
        "# GPU check",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- device: {meta['device_name']} ({meta['device']}); torch {meta['torch']}, transformers {meta['transformers']}",
        f"- size: {meta['size']}",
        f"- **{WEIGHTS_NOTE}**",
        "",
    ]
    agreement = report["parts"].get("agreement", {})
    if "compared" in agreement:
        lines += [
            "## Agreement (log p against cpu float32)",
            "",
            f"{agreement['requests']} loglikelihood requests ({_fmt(agreement['request_counts'])}), "
            f"model {agreement['model']}." + (f" {agreement['note']}." if "note" in agreement else ""),
            "",
            "| compared | max abs delta | mean abs delta | n | seconds |",
            "|---|---|---|---|---|",
        ]
        for name, d in agreement["compared"].items():
            lines.append(f"| {name} | {d['max_abs_delta']:.3g} | {d['mean_abs_delta']:.3g} | {d['n']} | {d['seconds']:.3g} |")
        lines += [f"| wall | {agreement.get('wall_s', 0):.3g} s |  |  |  |", ""]
    throughput = report["parts"].get("throughput", {})
    if "harness" in throughput:
        t = throughput
        lines += [
            "## Throughput of the evaluation path",
            "",
            f"{t['requests']} requests, {t['tokens']} tokens, {t['device']} {t['dtype']}, model {t['model']}; "
            "warmed up once before timing. The harness runs a shared context once for the requests that have "
            "it (the endings of a HellaSwag context, the choices of an MMLU question) and the floors do not, so the "
            "harness can beat them; tokens/s counts the unshared tokens for every path.",
            "",
            "| path | seconds | requests/s | tokens/s | time / harness |",
            "|---|---|---|---|---|",
        ]
        rows = [
            ("harness hf (batch_size=auto)", t["harness"]),
            ("plain torch floor (full logits)", t["floor"]),
            ("plain torch floor (logits_to_keep)", t["floor_kept_logits"]),
        ]
        if "seconds" in t["lm_eval"]:
            rows.append((f"lm-eval {t['lm_eval']['version']} HFLM (batch {t['lm_eval']['batch_size']})", t["lm_eval"]))
        for name, d in rows:
            lines.append(
                f"| {name} | {d['seconds']:.4g} | {d['requests_per_s']:.4g} | {d['tokens_per_s']:.4g} | "
                f"{d['seconds'] / t['harness']['seconds']:.3g} |"
            )
        lines += [
            "",
            f"harness/floor time ratio: {t['ratio_harness_over_floor_time']:.3g} (full logits), "
            f"{t['ratio_harness_over_floor_kept_logits_time']:.3g} (logits_to_keep); harness/lm-eval: "
            + (
                f"{t['ratio_harness_over_lm_eval_time']:.3g}"
                if "ratio_harness_over_lm_eval_time" in t
                else f"not available ({t['lm_eval'].get('error')})"
            ),
            "",
        ]
    for name, part in report["parts"].items():
        if name in ("agreement", "throughput") and "error" not in part:
            continue
        lines += [f"## {name}", "", "| key | value |", "|---|---|"]
        flat = _flatten(part)
        tables = [(k, v) for k, v in flat if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        lines += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in flat if (k, v) not in tables]
        lines.append("")
        for key, rows in tables:
            columns = list(dict.fromkeys(c for row in rows for c in row))
            lines += [f"{name} {key}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_fmt(row.get(c, "")).replace("|", "/") for c in columns) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def write(out: Path, report: dict) -> None:
    report["duckdb_imported"] = "duckdb" in sys.modules
    report["imported_optional"] = sorted(m for m in OPTIONAL_MODULES if m in sys.modules)
    data = {k: v for k, v in report.items() if k != "_seen"}
    (out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")


def run_part(report: dict, out: Path, name: str, fn: Callable[[], dict]) -> None:
    started = time.perf_counter()
    try:
        result = fn()
        if not isinstance(result, dict):
            result = {"result": result}
    except Exception as error:  # noqa: BLE001 - every part is isolated
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    result["wall_s"] = round(time.perf_counter() - started, 3)
    # optional packages the device may lack: which ones this part's import chain pulled in
    result["imported_optional"] = sorted(m for m in OPTIONAL_MODULES if m in sys.modules and m not in report["_seen"])
    report["_seen"].update(result["imported_optional"])
    report["parts"][name] = result
    print(f"[gpu_check] {name}: {'error ' + result['error'] if 'error' in result else 'ok'} ({result['wall_s']} s)", flush=True)
    write(out, report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--tokenizer", help="a dir with the SmolLM2 tokenizer files (default: the embedded model's)")
    parser.add_argument("--keep-models", action="store_true", help="keep the built checkpoints under OUT/models")
    args = parser.parse_args(argv)

    import torch
    import transformers

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.gpu_check", *(argv or sys.argv[1:])]),
            "size": args.size,
            "device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "cuda": torch.version.cuda,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_threads": torch.get_num_threads(),
            "weights": WEIGHTS_NOTE,
        },
        "parts": {},
        "_seen": {m for m in OPTIONAL_MODULES if m in sys.modules},
    }
    work = args.out / "models" if args.keep_models else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    ctx: dict[str, Any] = {"device": device}
    try:

        def setup() -> dict:
            tok_src = tokenizer_source(args.tokenizer)
            tok_dir = work / "tokenizer"
            tok_dir.mkdir(parents=True, exist_ok=True)
            for name in TOKENIZER_FILES:
                if (tok_src / name).is_file():
                    shutil.copy2(tok_src / name, tok_dir / name)
            build_device = device if device != "cpu" else "cpu"
            if args.size == "tiny":
                ctx["base_name"] = ctx["big_name"] = "tiny-llama (2 layers, hidden 64)"
                ctx["base_dir"] = ctx["big_dir"] = build_model(work / "tiny", TINY, tok_dir, "cpu", "float32")
            else:
                ctx["base_name"], ctx["big_name"] = "SmolLM2-135M architecture", "Llama 1B-class (2048x16, 32/8 heads)"
                ctx["base_dir"] = build_model(work / "base135m", base_arch(tok_dir), tok_dir, "cpu", "float32")
                ctx["big_dir"] = build_model(work / "llama1b", LLAMA_1B, tok_dir, build_device, "bfloat16")
            ctx["requests"], ctx["counts"] = build_requests(args.size)
            return {
                "tokenizer_from": str(tok_src),
                "base_model": ctx["base_name"],
                "big_model": ctx["big_name"],
                "requests": len(ctx["requests"]),
                "request_counts": ctx["counts"],
            }

        run_part(report, args.out, "setup", setup)
        ready = "error" not in report["parts"]["setup"]

        def after_setup(fn: Callable[[], dict]) -> Callable[[], dict]:
            def guarded() -> dict:
                if not ready:
                    raise RuntimeError("setup failed: no models or requests")
                return fn()

            return guarded

        dtype = "float32" if device == "cpu" else "bfloat16"

        def serving() -> dict:
            figures = part_figures("serving_figures", model_dir=ctx["big_dir"], device=device, dtype=dtype, **SERVING[args.size])
            return {"model_name": ctx["big_name"], **figures}

        def lora() -> dict:
            figures = part_figures("lora_figures", model_dir=ctx["big_dir"], device=device, dtype=dtype, **LORA[args.size])
            return {"model_name": ctx["big_name"], **figures}

        run_part(report, args.out, "agreement", after_setup(lambda: part_agreement(ctx)))
        run_part(report, args.out, "throughput", after_setup(lambda: part_throughput(ctx)))
        run_part(report, args.out, "serving", after_setup(serving))
        run_part(report, args.out, "lora", after_setup(lora))
    finally:
        if not args.keep_models:
            shutil.rmtree(work, ignore_errors=True)
    write(args.out, report)
    print(f"[gpu_check] wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}", flush=True)


if __name__ == "__main__":
    main()
