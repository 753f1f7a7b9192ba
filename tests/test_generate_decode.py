"""The cached, row-pruning decode loop: equal to a naive full-recompute greedy decode; seeded sampling."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from blindspot.generation.sample import batch_seed
from blindspot.generation.parsing import GenerationTemplate
from blindspot.generation.decode import StopRule, decode_batch, encode_prompt, sample_next

T = GenerationTemplate()


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer Llama and a byte-level BPE tokenizer trained on template text."""
    texts = [T.full_text(lab, f"A man {v} the dog.", f"Someone {v} an animal.")
             for lab in ("entailment", "neutral", "contradiction") for v in ("sees", "walks", "feeds")]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval(), hf


def _prompt(tok, label="neutral"):
    return [tok.bos_token_id] + tok(T.prompt(label), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _naive_greedy(model, prompt_ids, stop, max_new_tokens):
    """Reference: recompute the whole sequence every step, no cache, one row at a time."""
    seq, out = list(prompt_ids), []
    for _ in range(max_new_tokens):
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        seq.append(nxt)
        out.append(nxt)
        if stop.finished(out):
            break
    return out


def test_cached_pruned_greedy_equals_naive_reference(tiny):
    model, tok = tiny
    for label in ("entailment", "contradiction"):
        ids = _prompt(tok, label)
        stop = StopRule.build(tok, T.end_marker, model.config.vocab_size)
        rows, computed = decode_batch(model, encode_prompt(model, ids), 3, stop, max_new_tokens=40, temperature=0)
        ref = _naive_greedy(model, ids, stop, 40)
        assert rows == [ref, ref, ref]
        assert computed == 3 * (len(ref) - 1)


def test_finished_rows_leave_the_batch(tiny):
    """With the EOS token as the stop, rows that stop early cost no further forward rows."""
    model, tok = tiny
    stop = StopRule.build(tok, T.end_marker, model.config.vocab_size)
    rng = torch.Generator().manual_seed(3)
    rows, computed = decode_batch(model, encode_prompt(model, _prompt(tok)), 16, stop, max_new_tokens=30,
                                  temperature=1.5, generator=rng)
    assert computed == sum(len(r) - 1 for r in rows)  # a row is computed once per token it still needs
    assert all(len(r) <= 30 for r in rows)
    assert any(len(r) < 30 for r in rows), "expected some rows to stop early at high temperature"
    for r in rows:
        if len(r) < 30:
            assert stop.finished(r)


def test_stop_rule_sees_the_marker_however_it_is_tokenised(tiny):
    _, tok = tiny
    stop = StopRule.build(tok, T.end_marker, len(tok))
    ids = tok(" Premise: a b. Hypothesis: c." + T.end_marker, add_special_tokens=False)["input_ids"]
    assert stop.finished(ids)
    assert not any(stop.finished(ids[:i]) for i in range(1, len(ids)))
    assert stop.finished(ids[:3] + [tok.eos_token_id])


def test_sampling_is_seeded(tiny):
    model, tok = tiny
    stop = StopRule.build(tok, T.end_marker, model.config.vocab_size)
    prompt = encode_prompt(model, _prompt(tok))

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return decode_batch(model, prompt, 6, stop, max_new_tokens=12, temperature=1.0, top_p=0.9, generator=g)[0]

    assert run(batch_seed(0, "neutral", 0)) == run(batch_seed(0, "neutral", 0))
    assert run(batch_seed(0, "neutral", 0)) != run(batch_seed(0, "neutral", 1))


def test_batch_seed_depends_on_every_part():
    seeds = {batch_seed(s, lab, b) for s in (0, 1) for lab in ("entailment", "neutral") for b in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]]).expand(200, -1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, 2, 1.0, g).tolist()) <= {0, 1}
    assert set(sample_next(logits, 1.0, 0, 0.5, g).tolist()) == {0}  # p(token 0) = 0.71 >= 0.5
    assert sample_next(logits, 0.0, 0, 1.0, None).tolist() == [0] * 200
    assert len(set(sample_next(logits, 5.0, 0, 1.0, g).tolist())) == 5


def test_doomed_rows_are_abandoned_early(tiny):
    model, tok = tiny
    stop = StopRule.build(tok, T.end_marker, model.config.vocab_size, doomed=lambda text: len(text) > 0)
    rows, computed = decode_batch(model, encode_prompt(model, _prompt(tok)), 5, stop, max_new_tokens=30,
                                  temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert all(len(r) <= stop.check_every for r in rows)
    assert computed <= 5 * (stop.check_every - 1)


def test_sampling_follows_the_distribution_and_never_picks_zero_mass():
    probs = torch.tensor([[0.5, 0.3, 0.0, 0.2]])
    draws = sample_next(probs.log().expand(100_000, -1), 1.0, 0, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / 100_000
    assert freq[2] == 0 and torch.allclose(freq, probs[0].double(), atol=0.01)
