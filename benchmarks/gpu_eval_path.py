"""The evaluation-path parts of benchmarks/gpu_check.py: numeric agreement of the `hf` backend
across devices and dtypes, and its throughput against a harness-free floor (bare length-sorted
batched forwards in plain torch) and lm-eval's HFLM, on the same requests. Split from the script so
that neither file passes ~400 lines; see gpu_check.py for the whole run.
"""

from __future__ import annotations

import math
import time
from typing import Any

# (HellaSwag documents, MMLU subjects, documents per subject, MMLU shots) per size
MIX = {"tiny": (3, ["abstract_algebra"], 2, 5), "full": (40, ["abstract_algebra", "anatomy", "astronomy", "college_biology"], 10, 5)}

# -- requests --------------------------------------------------------------------------------


def build_requests(size: str) -> tuple[list, dict]:
    from harness.taskkit.data import forced_source
    from harness.tasks import get_task

    n_hella, subjects, n_mmlu, shots = MIX[size]
    requests: list = []
    counts: dict[str, int] = {}
    with forced_source("fixture"):
        plan = [("hellaswag", n_hella, 0)] + [(f"mmlu_{s}", n_mmlu, shots) for s in subjects]
        for name, limit, fewshot in plan:
            task = get_task(name)
            instances = task.build(task.load(), limit, fewshot, 1234)
            got = [r for inst in instances for r in inst.requests if r.kind == "loglikelihood"]
            counts[name] = len(got)
            requests += got
    return requests, counts


def hf_scores(model_dir: str, requests: list, device: str, dtype: str) -> tuple[list[float], float, dict]:
    from harness.backends.base import make_backend, parse_model_spec

    backend = make_backend(parse_model_spec(f"hf:{model_dir}", f"device={device},dtype={dtype},batch_size=auto"))
    try:
        started = time.perf_counter()
        out = [0.0] * len(requests)
        for i, result in backend.loglikelihood(requests, progress=lambda n: None):
            out[i] = float(result.logprob)
        return out, time.perf_counter() - started, backend.describe()
    finally:
        backend.close()


def _delta(a: list[float], b: list[float]) -> dict:
    diffs = [abs(x - y) for x, y in zip(a, b)]
    return {
        "max_abs_delta": max(diffs),
        "mean_abs_delta": sum(diffs) / len(diffs),
        "n": len(diffs),
        "finite": all(math.isfinite(d) for d in diffs),
    }


# -- parts -----------------------------------------------------------------------------------


def part_agreement(ctx: dict) -> dict:
    requests, device = ctx["requests"], ctx["device"]
    reference, ref_s, _ = hf_scores(ctx["base_dir"], requests, "cpu", "float32")
    result: dict[str, Any] = {
        "model": ctx["base_name"],
        "requests": len(requests),
        "request_counts": ctx["counts"],
        "reference": "cpu float32",
        "reference_seconds": round(ref_s, 3),
        "compared": {},
    }
    if device == "cpu":
        result["note"] = "CPU-only run: cpu bfloat16 compared against cpu float32 (no accelerator)"
        targets = [("cpu", "bfloat16")]
    else:
        targets = [(device, "float32"), (device, "bfloat16")]
    for dev, dtype in targets:
        scores, seconds, _ = hf_scores(ctx["base_dir"], requests, dev, dtype)
        result["compared"][f"{dev} {dtype}"] = _delta(scores, reference) | {"seconds": round(seconds, 3)}
    return result


def floor_time(model_dir: str, requests: list, device: str, dtype: str, token_budget: int) -> dict:
    """Harness-free floor: length-sorted, right-padded batched forward passes in plain torch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.backends.tokens import encode_pair, prefix_token_id

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prefix = prefix_token_id(tokenizer)
    pairs = [encode_pair(tokenizer, r.context, r.continuation, prefix) for r in requests]
    seqs = [(ctx + cont)[:-1] for ctx, cont in pairs]  # input tokens; the last is only predicted
    conts = [cont for _, cont in pairs]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches: list[list[int]] = []
    for i in order:  # rows of one batch padded to its longest (the first) row, within the token budget
        if batches and len(seqs[batches[-1][0]]) * (len(batches[-1]) + 1) <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tensors = []
    for batch in batches:  # prepared outside the timed loop
        width = len(seqs[batch[0]])
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, : len(seqs[i])] = 1
        tensors.append((ids.to(device), mask.to(device)))

    keeps = []  # boolean masks of the positions whose next token is a continuation token
    for batch, (ids, _) in zip(batches, tensors):
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        for row, i in enumerate(batch):
            n, k = len(seqs[i]), len(conts[i])
            keep[row, n - k : n] = True
        keeps.append(keep.to(device))
    targets = [torch.tensor([t for i in batch for t in conts[i]], device=device) for batch in batches]

    def run(kept: bool) -> list[float]:
        out = [0.0] * len(seqs)
        with torch.inference_mode():
            for batch, (ids, mask), keep, target in zip(batches, tensors, keeps, targets):
                if kept:  # only the needed positions go through lm_head: (N, vocab)
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
                else:  # the whole (B, T, vocab), then the needed positions
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[keep]
                logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, target[:, None])[:, 0]
                sums = torch.split(logp, [len(conts[i]) for i in batch])
                for i, part in zip(batch, sums):
                    out[i] = part.sum().item()
        return out

    timings = {}
    for kept in (False, True):
        run(kept)  # warm-up
        _sync(device)
        started = time.perf_counter()
        scores = run(kept)
        _sync(device)
        timings[kept] = (time.perf_counter() - started, scores)
    model = tensors = keeps = None  # free the weights before the next measurement
    _free(device)
    return {
        "seconds": timings[False][0],
        "scores": timings[False][1],
        "kept_seconds": timings[True][0],
        "kept_scores": timings[True][1],
        "batches": len(batches),
        "tokens": sum(len(s) for s in seqs),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def lm_eval_time(model_dir: str, requests: list, device: str, dtype: str, batch_size: int) -> dict:
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        return {"available": False, "error": f"lm-eval not available: {error}"}
    from importlib import metadata

    lm = HFLM(pretrained=model_dir, dtype=dtype, batch_size=batch_size, device=device)
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=(r.context, r.continuation), idx=i) for i, r in enumerate(requests)
    ]
    lm.loglikelihood(instances, disable_tqdm=True)  # warm-up
    _sync(device)
    started = time.perf_counter()
    out = lm.loglikelihood(instances, disable_tqdm=True)
    _sync(device)
    seconds = time.perf_counter() - started
    del lm
    _free(device)
    return {
        "available": True,
        "version": metadata.version("lm_eval"),
        "seconds": seconds,
        "batch_size": batch_size,
        "scores": [float(ll) for ll, _ in out],
    }


def part_throughput(ctx: dict) -> dict:
    from harness.backends.base import make_backend, parse_model_spec
    from harness.backends.hf.backend import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET

    requests, device = ctx["requests"], ctx["device"]
    dtype = "float32" if device == "cpu" else "bfloat16"
    model_dir = ctx["base_dir"]
    backend = make_backend(parse_model_spec(f"hf:{model_dir}", f"device={device},dtype={dtype},batch_size=auto"))
    try:
        list(backend.loglikelihood(requests, progress=lambda n: None))  # warm-up (and load)
        _sync(device)
        backend.forward_seconds = 0.0
        started = time.perf_counter()
        harness_scores = [0.0] * len(requests)
        for i, result in backend.loglikelihood(requests, progress=lambda n: None):
            harness_scores[i] = float(result.logprob)
        _sync(device)
        harness_s = time.perf_counter() - started
        forward_s = backend.forward_seconds
    finally:
        backend.close()
    floor = floor_time(model_dir, requests, device, dtype, GPU_TOKEN_BUDGET if device != "cpu" else CPU_TOKEN_BUDGET)
    tokens = floor["tokens"]
    figures: dict[str, Any] = {
        "model": ctx["base_name"],
        "device": device,
        "dtype": dtype,
        "requests": len(requests),
        "tokens": tokens,
        "tokens_note": "tokens = sum over requests of (context + continuation - 1), the unshared input length",
        "harness": {
            "seconds": harness_s,
            "forward_seconds": forward_s,
            "requests_per_s": len(requests) / harness_s,
            "tokens_per_s": tokens / harness_s,
            "batch_size": "auto",
        },
        "floor": {
            "seconds": floor["seconds"],
            "requests_per_s": len(requests) / floor["seconds"],
            "tokens_per_s": tokens / floor["seconds"],
            "batches": floor["batches"],
        },
        "floor_kept_logits": {
            "seconds": floor["kept_seconds"],
            "requests_per_s": len(requests) / floor["kept_seconds"],
            "tokens_per_s": tokens / floor["kept_seconds"],
            "batches": floor["batches"],
        },
        "floor_note": "floor: plain torch, length-sorted right-padded rows, full (B, T, vocab) logits, log_softmax + "
        "gather; floor_kept_logits: the same with a boolean logits_to_keep (only continuation positions reach lm_head)",
        "ratio_harness_over_floor_time": harness_s / floor["seconds"],
        "ratio_harness_over_floor_kept_logits_time": harness_s / floor["kept_seconds"],
        "floor_vs_harness_scores": _delta(harness_scores, floor["scores"]),
        "floor_kept_logits_vs_harness_scores": _delta(harness_scores, floor["kept_scores"]),
    }
    try:
        lm = lm_eval_time(model_dir, requests, device, dtype, 32 if device != "cpu" else 8)
    except Exception as error:  # noqa: BLE001 - lm-eval failing must not lose the other figures
        lm = {"available": False, "error": f"{type(error).__name__}: {error}"}
    if lm.get("available"):
        figures["lm_eval"] = {
            "version": lm["version"],
            "seconds": lm["seconds"],
            "batch_size": lm["batch_size"],
            "requests_per_s": len(requests) / lm["seconds"],
            "tokens_per_s": tokens / lm["seconds"],
        }
        figures["ratio_harness_over_lm_eval_time"] = harness_s / lm["seconds"]
        figures["lm_eval_vs_harness_scores"] = _delta(harness_scores, lm["scores"])
    else:
        figures["lm_eval"] = {"available": False, "error": lm.get("error")}
    return figures
