"""Loglikelihood scoring with shared contexts: one packed row per distinct context.

A multiple-choice question asks for log p(choice_i | context) for several choices on one context.
Scoring each pair separately re-reads the context once per choice. Here a row holds the context
once, followed by every continuation's input tokens; a block attention mask lets each
continuation see the context and (causally) itself but not its siblings, and position ids restart
each continuation at len(context). The logits are then exactly those of the separate passes (up
to float noise), and MMLU-style single-token choices cost one forward pass per question.

The mask goes to the model as a float additive 4-D tensor (batch, 1, query, key) in the model's
dtype: transformers 5 hands a 4-D mask to the attention function unchanged (masking_utils
`_preprocess_mask_arguments`), SDPA accepts an additive float mask, and the eager path adds it to
the scores (a boolean mask would break eager attention).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.backends.tokens import TokenRequest


@dataclass
class Segment:
    """Where one request's scores come from inside a packed row."""

    index: int  # position of the request in the caller's list
    logit_positions: list[int]  # row positions whose next-token logits predict the targets
    targets: list[int]


@dataclass
class PackedRow:
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    block: list[int] = field(default_factory=list)  # 0 = shared context, k = k-th continuation
    segments: list[Segment] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Score:
    index: int
    logprob: float
    is_greedy: bool


def _new_row(context: Sequence[int]) -> PackedRow:
    n = len(context)
    return PackedRow(list(context), list(range(n)), [0] * n, [])


def _add_continuation(row: PackedRow, context_len: int, index: int, continuation: Sequence[int]) -> None:
    # The last continuation token is only ever a target, never an input, as in lm-eval's [:-1].
    block_id = len(row.segments) + 1
    start = len(row.tokens)
    inputs = list(continuation[:-1])
    row.tokens.extend(inputs)
    row.positions.extend(range(context_len, context_len + len(inputs)))
    row.block.extend([block_id] * len(inputs))
    logit_positions = [context_len - 1] + list(range(start, start + len(inputs)))
    row.segments.append(Segment(index, logit_positions, list(continuation)))


def pack_rows(requests: Sequence[TokenRequest], max_row_tokens: int, share_contexts: bool = True) -> list[PackedRow]:
    """Rows sorted longest first; requests with the same context share a row up to max_row_tokens.

    With share_contexts=False every request gets its own row (lm-eval's layout), which is the
    reference the packed computation is checked against.
    """
    groups: dict[Any, list[int]] = {}
    for i, request in enumerate(requests):
        key = request.context if share_contexts else i
        groups.setdefault(key, []).append(i)
    rows: list[PackedRow] = []
    for members in groups.values():
        context = requests[members[0]].context
        row = _new_row(context)
        for i in members:
            extra = len(requests[i].continuation) - 1
            if row.segments and len(row) + extra > max_row_tokens:
                rows.append(row)
                row = _new_row(context)
            _add_continuation(row, len(context), i, requests[i].continuation)
        rows.append(row)
    rows.sort(key=len, reverse=True)
    return rows


def batches(rows: Sequence[PackedRow], batch_size: int | None, token_budget: int) -> Iterator[list[PackedRow]]:
    """Consecutive rows (longest first): batch_size rows each, or with batch_size None as many as
    fit token_budget padded tokens (the first row sets the padded width)."""
    start = 0
    while start < len(rows):
        if batch_size is not None:
            size = batch_size
        else:
            size = max(1, token_budget // max(1, len(rows[start])))
        yield list(rows[start : start + size])
        start += size


def block_mask(rows: Sequence[PackedRow], width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive (B, 1, width, width) mask: 0 where attention is allowed, dtype-min elsewhere."""
    block = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        block[b, : len(row)] = torch.tensor(row.block, dtype=torch.long)
    q_block = block[:, :, None]
    k_block = block[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()[None]
    same_or_context = (k_block == 0) | (k_block == q_block)
    allowed = causal & same_or_context & (k_block >= 0)
    # Padding queries attend to themselves so no softmax row is empty (no NaN); nobody reads them.
    allowed |= torch.eye(width, dtype=torch.bool)[None] & (q_block < 0)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None].to(device)


def build_inputs(rows: Sequence[PackedRow], dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded input ids, position ids, block mask and the (B, T) positions whose logits we need."""
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    keep = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row.tokens, dtype=torch.long)
        positions[b, : len(row)] = torch.tensor(row.positions, dtype=torch.long)
        for segment in row.segments:
            keep[b, segment.logit_positions] = True
    return {
        "input_ids": ids.to(device),
        "position_ids": positions.to(device),
        "attention_mask": block_mask(rows, width, dtype, device),
        "keep": keep.to(device),
    }


class PackedScorer:
    """Runs packed rows through a causal LM and turns the kept logits into per-request scores."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # Projecting only the needed positions onto the vocabulary saves most of the lm_head and
        # log-softmax work; models whose forward cannot take a boolean logits_to_keep fall back.
        self.keep_supported: bool | None = None

    def score(self, rows: Sequence[PackedRow]) -> list[Score]:
        dtype = self.model.dtype
        device = self.model.device
        inputs = build_inputs(rows, dtype, device)
        keep = inputs.pop("keep")
        logits = self.kept_logits(inputs, keep)
        return scores_from_logits(rows, keep, logits)

    def kept_logits(self, inputs: dict[str, Any], keep: torch.Tensor) -> torch.Tensor:
        n_kept = int(keep.sum())
        with torch.inference_mode():
            if self.keep_supported is not False:
                try:
                    logits = self.model(**inputs, use_cache=False, logits_to_keep=keep).logits
                    if logits.ndim == 2 and logits.shape[0] == n_kept:
                        self.keep_supported = True
                        return logits
                except (TypeError, IndexError, RuntimeError):
                    if self.keep_supported:
                        raise  # it worked before: this is a real error
                self.keep_supported = False
            return self.model(**inputs, use_cache=False).logits[keep]


def scores_from_logits(rows: Sequence[PackedRow], keep: torch.Tensor, logits: torch.Tensor) -> list[Score]:
    """logits: (N, vocab) for keep's True positions in row-major order."""
    flat = torch.cumsum(keep.flatten().to(torch.long), 0) - 1
    width = keep.shape[1]
    positions: list[int] = []
    targets: list[int] = []
    lengths: list[int] = []
    indices: list[int] = []
    for b, row in enumerate(rows):
        for segment in row.segments:
            positions.extend(b * width + p for p in segment.logit_positions)
            targets.extend(segment.targets)
            lengths.append(len(segment.targets))
            indices.append(segment.index)
    rows_idx = flat[torch.tensor(positions, device=keep.device)]
    target_t = torch.tensor(targets, device=logits.device)
    # log-softmax in float32 whatever the model dtype, only at the target entries, with the
    # rounding of torch.log_softmax ((x - max) - log sum exp(x - max)); x - logsumexp(x) drifts
    # by ~1e-5 per token, which adds up over long continuations.
    logits = logits.float()
    top, greedy_tok = logits.max(dim=-1)
    log_norm = torch.log(torch.exp(logits - top[:, None]).sum(dim=-1))
    token_lp = (logits[rows_idx, target_t] - top[rows_idx]) - log_norm[rows_idx]
    token_greedy = greedy_tok[rows_idx] == target_t
    scores = []
    for index, lp, greedy in zip(indices, token_lp.split(lengths), token_greedy.split(lengths)):
        scores.append(Score(index, float(lp.sum()), bool(greedy.all())))
    return scores
