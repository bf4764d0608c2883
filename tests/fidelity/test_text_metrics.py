"""ROUGE, BLEU and BERTScore equal the reference packages' own numbers on the same pairs."""

from __future__ import annotations

import bert_score
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from harness.core.requests import Generate
from harness.core.task import Instance
from harness.scoring import text_metrics as tm
from harness.scoring.rag.embeddings import minilm_path

PAIRS = [
    ("the cat sat on the mat", "a cat was sitting on the mat"),
    ("The quick brown fox jumps over the lazy dog.", "The quick brown fox jumps over the lazy dog."),
    ("Paris is the capital of France.", "The capital of France is Paris, a city on the Seine."),
    ("Running runners ran quickly", "the runner runs quick"),
    ("completely unrelated words here", "nothing in common at all"),
    ("", "an empty prediction scores zero"),
    ("Zürich liegt in der Schweiz", "Zürich ist eine Stadt in der Schweiz"),
]


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score(use_stemmer):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
    for prediction, reference in PAIRS:
        expected = scorer.score(reference, prediction)
        got = tm.rouge(prediction, reference, use_stemmer=use_stemmer)
        assert got == {k: expected[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}


def test_rouge_is_not_symmetric_in_arguments_we_pass_reference_first():
    # precision and recall swap when the arguments swap; F is symmetric, so check the underlying order
    pred, ref = "a b c d", "a b"
    assert tm.rouge(pred, ref)["rouge1"] == pytest.approx(2 * (2 / 4) * 1.0 / (2 / 4 + 1.0))


def test_bleu_equals_sacrebleu():
    for prediction, reference in PAIRS:
        assert tm.bleu(prediction, reference) == sacrebleu.sentence_bleu(prediction, [reference]).score
    predictions, references = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    assert tm.corpus_bleu(predictions, references) == sacrebleu.corpus_bleu(predictions, [references]).score
    assert tm.bleu(PAIRS[1][0], PAIRS[1][1]) == pytest.approx(100.0)


def test_bertscore_equals_bert_score_with_layer_5():
    # bert-score 0.3.13 crashes on empty text under transformers 5; its rule (score 0) is checked apart
    predictions, references = [p for p, r in PAIRS if p], [r for p, r in PAIRS if p]
    ours = tm.bertscore(predictions, references)
    p, r, f = bert_score.score(predictions, references, model_type=str(minilm_path()), num_layers=5)
    assert [o["bertscore_precision"] for o in ours] == p.tolist()
    assert [o["bertscore_recall"] for o in ours] == r.tolist()
    assert [o["bertscore_f1"] for o in ours] == f.tolist()
    # identical texts match token for token
    assert ours[1]["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
    # the layer really is the 5th of MiniLM's 6: bert-score truncated the encoder
    model = tm.default_bertscore()._load()._model  # type: ignore[attr-defined]
    assert len(model.encoder.layer) == tm.BERTSCORE_LAYER == 5
    # another layer gives other numbers, so the choice is visible in the results
    _, _, f6 = bert_score.score(predictions[:1], references[:1], model_type=str(minilm_path()), num_layers=6)
    assert f6.item() != pytest.approx(f[0].item(), abs=1e-4)


def test_bertscore_of_empty_text_is_zero():
    scores = tm.bertscore(["", "the cat sat", "the cat sat"], ["a reference", "", "the cat sat"])
    assert scores[0] == scores[1] == {"bertscore_precision": 0.0, "bertscore_recall": 0.0, "bertscore_f1": 0.0}
    assert scores[2]["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)


def test_text_scorer_for_a_generative_task():
    instance = Instance(doc_id=0, doc={}, prompt="Q", target="a cat was sitting on the mat",
                        requests=(Generate(prompt="Q"),))
    score = tm.text_scorer(["rouge1", "bleu", "bertscore_f1"], stop=("\n",))
    scored = score(instance, [["the cat sat on the mat\nextra line"]])
    assert scored.extracted == "the cat sat on the mat"
    assert set(scored.metrics) == {"rouge1", "bleu", "bertscore_f1"}
    assert scored.metrics["rouge1"] == tm.rouge("the cat sat on the mat", instance.target)["rouge1"]
    assert scored.metrics["bleu"] == sacrebleu.sentence_bleu("the cat sat on the mat", [instance.target]).score
    assert [s.name for s in tm.text_metric_specs(["rouge2", "bertscore_f1"])] == ["rouge2", "bertscore_f1"]
    with pytest.raises(ValueError):
        tm.text_metric_specs(["meteor"])
