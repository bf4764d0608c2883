"""Shared prefixes across rows: a long common prefix runs once per batch, the rest against its KV cache.

Every 5-shot MMLU prompt of a subject starts with the same description and the same five dev
examples (first_n sampling), about 500 tokens, before a question of about 100. Scoring each
question from scratch spends most of the forward pass on that prefix. Rows are ordered
lexicographically by token ids so rows sharing a prefix are neighbours, then batched; each
batch's common prefix is run once (batch 1), its keys and values repeated across the batch,
and only the suffixes are run, attending to the prefix and (under the block mask of
hf_packing) to themselves. The answers are those of the full rows up to float noise.

Rows whose neighbours share fewer than MIN_SHARED_PREFIX tokens (HellaSwag) keep the plain
longest-first packed path: there a prefix pass would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from harness.backends.hf.packing import PackedRow, PackedScorer, Score, build_inputs, scores_from_logits

MIN_SHARED_PREFIX = 64
PREFIX_BATCH = 16  # rows per prefix batch when batch_size is auto: keys/values grow with it


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def split_by_prefix(rows: Sequence[PackedRow]) -> tuple[list[list[PackedRow]], list[PackedRow]]:
    """(families of rows sharing >= MIN_SHARED_PREFIX leading tokens with a neighbour, the rest)."""
    order = sorted(rows, key=lambda r: r.tokens)
    families: list[list[PackedRow]] = []
    current: list[PackedRow] = []
    for row in order:
        if current and common_prefix_len(current[-1].tokens, row.tokens) >= MIN_SHARED_PREFIX:
            current.append(row)
        else:
            if current:
                families.append(current)
            current = [row]
    if current:
        families.append(current)
    shared = [f for f in families if len(f) > 1]
    alone = sorted((f[0] for f in families if len(f) == 1), key=len, reverse=True)
    return shared, alone


def prefix_batches(families: Sequence[list[PackedRow]], batch_size: int | None) -> Iterator[list[PackedRow]]:
    size = batch_size or PREFIX_BATCH
    for family in families:
        for start in range(0, len(family), size):
            yield family[start : start + size]


def usable_prefix(rows: Sequence[PackedRow]) -> int:
    """Tokens all rows share, short of the first position whose logits are needed."""
    if len(rows) < 2:
        return 0
    shared = min(common_prefix_len(rows[0].tokens, row.tokens) for row in rows[1:])
    first_needed = min(p for row in rows for s in row.segments for p in s.logit_positions)
    return min(shared, first_needed)


def _suffix(row: PackedRow, cut: int) -> PackedRow:
    segments = [replace(s, logit_positions=[p - cut for p in s.logit_positions]) for s in row.segments]
    return PackedRow(row.tokens[cut:], row.positions[cut:], row.block[cut:], segments)


def score_with_prefix(scorer: PackedScorer, rows: Sequence[PackedRow], cut: int) -> list[Score]:
    """Run rows[0].tokens[:cut] once, then every row's remainder against its cached keys/values."""
    model = scorer.model
    suffixes = [_suffix(row, cut) for row in rows]
    inputs: dict[str, Any] = build_inputs(suffixes, model.dtype, model.device)
    keep = inputs.pop("keep")
    mask = inputs["attention_mask"]
    # every suffix query may see the whole prefix
    inputs["attention_mask"] = torch.cat([mask.new_zeros(mask.shape[:-1] + (cut,)), mask], dim=-1)
    prefix_ids = torch.tensor([rows[0].tokens[:cut]], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        cache = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(len(rows))
        inputs["past_key_values"] = cache  # the layers append the suffix keys/values to it
        logits = scorer.kept_logits(inputs, keep)
    return scores_from_logits(suffixes, keep, logits)


def score(scorer: PackedScorer, rows: Sequence[PackedRow]) -> list[Score]:
    """A batch from prefix_batches through the prefix path, any other through the plain one."""
    cut = usable_prefix(rows)
    return score_with_prefix(scorer, rows, cut) if cut >= MIN_SHARED_PREFIX else scorer.score(rows)


