"""Evaluation: prefix-cached inference equals full-sequence inference, scoring, output files, errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from blindspot.data.example import HANS_LABELS, MNLI_LABELS, NLIExample, NLISet
from blindspot.errors import DataError
from blindspot.evaluate import evaluate, is_two_way, predict_proba, score, set_kind
from blindspot.templates import PAPER_CLASSIFIER_TEMPLATE, SHORT_CLASSIFIER_TEMPLATE

PAIRS = [
    ("The doctor saw the lawyer near the bank.", "The lawyer saw the doctor."),
    ("A cat sat on the mat while it rained.", "A cat sat."),
    ("Nobody thought the senator was in the park.", "The senator was in the park."),
    ("The artist and the banker met.", "The banker met the artist near the river today."),
    ("x", "y"),
    ("The students who the professor helped slept.", "The professor slept."),
]


def tiny_classifier(seed: int = 0):
    """A 2-layer, 64-wide LlamaForSequenceClassification and a word-level tokenizer for PAIRS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [t for p in PAIRS for t in p] + [PAPER_CLASSIFIER_TEMPLATE, SHORT_CLASSIFIER_TEMPLATE]
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=3,
                         pad_token_id=tok.pad_token_id, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config).eval()
    return model, tok


def full_sequence_proba(model, tok, template: str, pairs) -> np.ndarray:
    """Reference: each example's whole prompt in one right-padded batch, no cache."""
    from blindspot.templates import encode_classifier_inputs

    prefix, suffixes = encode_classifier_inputs(tok, template, pairs)
    seqs = [prefix + s for s in suffixes]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.softmax(-1).numpy()


def examples_of(pairs, labels):
    return [NLIExample(id=f"ex{i}", premise=p, hypothesis=h, label=lab)
            for i, ((p, h), lab) in enumerate(zip(pairs, labels))]


@pytest.mark.parametrize("template", ["paper", "short"])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_prefix_cache_equals_full_sequence(template, batch_size):
    model, tok = tiny_classifier()
    ref = full_sequence_proba(model, tok, template, PAIRS)
    got = predict_proba(model, tok, template, examples_of(PAIRS, ["entailment"] * len(PAIRS)),
                        batch_size=batch_size)
    assert got.shape == (len(PAIRS), 3)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert not np.allclose(got[0], got[1])  # the examples really differ


def with_random_lora(model):
    """`model` wrapped in a LoRA adapter whose B matrices are random (B starts at zero: make it matter)."""
    from peft import LoraConfig, get_peft_model

    from blindspot.training.loop import peft_internal_deprecations_hidden

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      modules_to_save=["score"], task_type="SEQ_CLS")
    with peft_internal_deprecations_hidden():
        peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft_model.eval()


def test_prefix_cache_equals_full_sequence_with_lora():
    model, tok = tiny_classifier()
    peft_model = with_random_lora(model)
    ref = full_sequence_proba(peft_model, tok, "paper", PAIRS)
    got = predict_proba(peft_model, tok, "paper", examples_of(PAIRS, ["neutral"] * len(PAIRS)), batch_size=4)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    with peft_model.disable_adapter():
        base = full_sequence_proba(peft_model, tok, "paper", PAIRS)
    assert not np.allclose(got, base, atol=1e-4)  # the adapter changed the outputs


def test_predict_proba_keeps_order_and_mode():
    model, tok = tiny_classifier()
    model.train()
    ex = examples_of(PAIRS, ["entailment"] * len(PAIRS))
    forward = predict_proba(model, tok, "paper", ex, batch_size=2)
    backward = predict_proba(model, tok, "paper", ex[::-1], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-6)
    assert model.training  # restored
    assert predict_proba(model, tok, "paper", []).shape == (0, 3)


# --- scoring ------------------------------------------------------------------------------

def hans_example(i, heuristic, subcase, label):
    return NLIExample(id=f"h{i}", premise="p", hypothesis="h", label=label, heuristic=heuristic, subcase=subcase)


def test_score_hans_slices_and_blindspot():
    ex = [hans_example(0, "lexical_overlap", "ln_subject/object_swap", "non-entailment"),
          hans_example(1, "lexical_overlap", "ln_subject/object_swap", "non-entailment"),
          hans_example(2, "lexical_overlap", "le_relative_clause", "entailment"),
          hans_example(3, "subsequence", "sn_NP/S", "non-entailment"),
          hans_example(4, "subsequence", "se_PP_on_obj", "entailment")]
    preds = ["entailment", "contradiction", "entailment", "neutral", "contradiction"]
    rows = {r["slice"]: r for r in score(ex, preds, "hans")}
    assert (rows["all"]["correct"], rows["all"]["n"]) == (3, 5)
    assert "2way" not in rows
    blind = rows["heuristic=lexical_overlap,label=non-entailment"]
    assert (blind["correct"], blind["n"], blind["accuracy"]) == (1, 2, 0.5)
    assert (rows["heuristic=lexical_overlap"]["correct"], rows["heuristic=lexical_overlap"]["n"]) == (2, 3)
    assert (rows["label=entailment"]["correct"], rows["label=entailment"]["n"]) == (1, 2)
    assert rows["subcase=ln_subject/object_swap"]["correct"] == 1
    assert rows["subcase=sn_NP/S"]["accuracy"] == 1.0  # neutral counts as non-entailment
    assert rows["heuristic=subsequence,label=entailment"]["correct"] == 0
    assert rows["all"]["ci_low"] < 0.6 < rows["all"]["ci_high"]


def test_score_mnli_three_way_and_two_way_fold():
    gold = ["entailment", "neutral", "contradiction", "contradiction", "entailment", "neutral"]
    preds = ["entailment", "contradiction", "contradiction", "neutral", "neutral", "neutral"]
    ex = [NLIExample(id=str(i), premise="p", hypothesis="h", label=g, genre="fiction" if i < 3 else "travel")
          for i, g in enumerate(gold)]
    rows = {r["slice"]: r for r in score(ex, preds, "mnli")}
    assert rows["all"]["correct"] == 3
    # 2-way: n<->c confusions become right, e->n stays wrong
    assert rows["2way"]["correct"] == 5
    assert rows["label=contradiction"]["correct"] == 1 and rows["label=contradiction"]["n"] == 2
    assert rows["genre=fiction"]["correct"] == 2 and rows["genre=travel"]["correct"] == 1
    assert [r["slice"] for r in score(ex, preds, "mnli")][:5] == [
        "all", "2way", "label=entailment", "label=neutral", "label=contradiction"]


def test_lexical_overlap_slices_follow_the_rule():
    from blindspot.evaluate import overlap_flags, prediction_rows

    ex = [NLIExample("0", "The doctor saw the lawyer.", "The lawyer saw the doctor.", "neutral"),
          NLIExample("1", "The doctor saw the lawyer .", "The lawyer saw .", "contradiction"),
          NLIExample("2", "A cat sat.", "A dog ran.", "neutral"),
          NLIExample("3", "A cat sat .", "A cat sat .", "entailment")]
    preds = ["entailment", "entailment", "neutral", "entailment"]
    assert overlap_flags(ex, "paper") == [False, True, False, True]
    assert overlap_flags(ex, "words") == [True, True, False, True]
    rows = {r["slice"]: r for r in score(ex, preds, "mnli", overlap=overlap_flags(ex))}
    assert (rows["lexical_overlap=yes"]["n"], rows["lexical_overlap=no"]["n"]) == (2, 2)
    assert rows["lexical_overlap=no,label=neutral"]["n"] == 2 and rows["lexical_overlap=no,label=neutral"]["correct"] == 1
    assert rows["lexical_overlap=yes,label=contradiction"]["correct"] == 0
    assert "lexical_overlap=no,label=entailment" not in rows  # empty slices are left out
    words = {r["slice"]: r for r in score(ex, preds, "mnli", overlap=overlap_flags(ex, "words"))}
    assert words["lexical_overlap=yes"]["n"] == 3
    hans = [hans_example(0, "lexical_overlap", "ln_passive", "entailment")]
    assert overlap_flags(hans) is None  # HANS-like sets are sliced by their own heuristic field
    prow = prediction_rows(ex, np.eye(3)[[0, 0, 1, 0]], MNLI_LABELS, False, overlap_flags(ex))
    assert [r["lexical_overlap"] for r in prow] == [False, True, False, True]


def test_set_kind_and_label_mapping():
    mnli = NLISet("m", MNLI_LABELS, [NLIExample("1", "p", "h", "neutral", genre="slate")])
    hans = NLISet("h", HANS_LABELS, [hans_example(0, "constituent", "cn_embedded_under_if", "entailment")])
    generic2 = NLISet("g", HANS_LABELS, [NLIExample("1", "p", "h", "non-entailment")])
    assert (set_kind(mnli), set_kind(hans), set_kind(generic2)) == ("mnli", "hans", "nli")
    assert is_two_way(mnli, MNLI_LABELS) is False
    assert is_two_way(hans, MNLI_LABELS) is True and is_two_way(generic2, MNLI_LABELS) is True
    bad = NLISet("odd", ("entailment", "maybe"), [NLIExample("1", "p", "h", "maybe")], source="odd.jsonl")
    with pytest.raises(DataError, match=r"'odd'.*odd\.jsonl.*'maybe'"):
        is_two_way(bad, MNLI_LABELS)


# --- the stage ------------------------------------------------------------------------------

def fake_classifier(tmp_path):
    model, tok = tiny_classifier()
    return SimpleNamespace(model=model, tokenizer=tok, template="paper", labels=MNLI_LABELS,
                           spec={"model": "tiny"}, path=tmp_path / "clf", device=torch.device("cpu"))


def test_evaluate_writes_contract_files(tmp_path):
    clf = fake_classifier(tmp_path)
    mnli = NLISet("m", MNLI_LABELS, [NLIExample(f"m{i}", p, h, MNLI_LABELS[i % 3], genre="fiction")
                                     for i, (p, h) in enumerate(PAIRS)], source="mnli.jsonl")
    hans = NLISet("h", HANS_LABELS, [NLIExample(f"h{i}", p, h, HANS_LABELS[i % 2], heuristic="lexical_overlap",
                                                subcase="ln_passive") for i, (p, h) in enumerate(PAIRS)])
    out = evaluate(clf, {"mnli_m": mnli, "hans": hans}, tmp_path / "eval", batch_size=4)
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "meta.json", "metrics.json", "predictions"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sets"]["mnli_m"]["kind"] == "mnli" and metrics["sets"]["hans"]["kind"] == "hans"
    assert metrics["sets"]["hans"]["n"] == len(PAIRS) and metrics["examples_per_s"] > 0
    slices = {m["slice"] for m in metrics["sets"]["hans"]["metrics"]}
    assert "heuristic=lexical_overlap,label=non-entailment" in slices
    rows = [json.loads(line) for line in (out / "predictions" / "hans.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"h{i}" for i in range(len(PAIRS))]
    r = rows[0]
    assert set(r) == {"id", "gold", "pred", "pred_eval", "correct", "probs", "heuristic", "subcase"}
    assert r["pred"] in MNLI_LABELS and r["pred_eval"] in HANS_LABELS and len(r["probs"]) == 3
    assert abs(sum(r["probs"]) - 1) < 1e-4 and r["correct"] == (r["pred_eval"] == r["gold"])
    correct = sum(r["correct"] for r in rows)
    assert metrics["sets"]["hans"]["metrics"][0]["correct"] == correct
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sets"]["hans"]["n"] == len(PAIRS) and meta["model"] == "tiny" and meta["device"] == "cpu"
    assert metrics["overlap_rule"] == "paper" and meta["overlap_rule"] == "paper"
    mnli_rows = [json.loads(line) for line in (out / "predictions" / "mnli_m.jsonl").read_text().splitlines()]
    assert all(isinstance(r["lexical_overlap"], bool) for r in mnli_rows)
    assert any(m["slice"].startswith("lexical_overlap=") for m in metrics["sets"]["mnli_m"]["metrics"])
    # same spec again: a no-op
    mtime = (out / "metrics.json").stat().st_mtime_ns
    evaluate(clf, {"mnli_m": mnli, "hans": hans}, tmp_path / "eval", batch_size=4)
    assert (out / "metrics.json").stat().st_mtime_ns == mtime


def test_evaluate_refuses_unknown_labels_before_compute(tmp_path):
    clf = fake_classifier(tmp_path)
    good = NLISet("m", MNLI_LABELS, [NLIExample("1", "p", "h", "neutral")])
    bad = NLISet("odd", ("yes", "maybe"), [NLIExample("1", "p", "h", "maybe")], source="odd.csv")
    with pytest.raises(DataError, match="maybe"):
        evaluate(clf, {"good": good, "odd": bad}, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()  # nothing was computed or written


def test_length_batches_caps_examples_and_padded_tokens():
    from blindspot.predict import length_batches

    lengths = [10, 50, 12, 11, 9, 10, 48, 10]
    batches = length_batches(lengths, batch_size=3, max_tokens=60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 and lengths[b[0]] * len(b) <= 60 for b in batches if len(b) > 1)
    assert batches[0] == [1] and batches[1] == [6]  # the long ones alone, longest first
    assert [len(b) for b in length_batches(lengths, batch_size=4, max_tokens=10**6)] == [4, 4]
    assert length_batches([], 4) == []


def test_predict_proba_token_cap_changes_nothing():
    model, tok = tiny_classifier()
    ex = examples_of(PAIRS, ["entailment"] * len(PAIRS))
    a = predict_proba(model, tok, "paper", ex, batch_size=32, max_tokens=1)  # one example per batch
    b = predict_proba(model, tok, "paper", ex, batch_size=32, max_tokens=10**6)
    np.testing.assert_allclose(a, b, atol=1e-5)
