"""Shared-start batching: grouping rules, and grouped inference equals full-sequence inference."""

from __future__ import annotations

import numpy as np
import pytest

from blindspot.batching import batch_plan, group_batches, planned_tokens, share_groups
from blindspot.evaluate import predict_proba
from test_evaluate import PAIRS, examples_of, full_sequence_proba, tiny_classifier, with_random_lora

# Three premises with three hypotheses each, one premise alone, and an exact duplicate pair.
SHARED = [(p, h) for p in (PAIRS[0][0], PAIRS[2][0], PAIRS[5][0])
          for h in (PAIRS[0][1], PAIRS[1][1], PAIRS[2][1])] + [PAIRS[3], PAIRS[0]]


def test_groups_need_min_shared_and_keep_a_token_each():
    s = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 2, 3, 4], [9, 9], [1, 2, 7, 7]]
    groups = share_groups(s, min_shared=3)
    assert groups == [(3, [2, 0, 1])]  # [1,2,3,4] keeps its last token, so the group shares 3
    assert share_groups(s, min_shared=4) == [(4, [0, 1])]
    assert share_groups([[5, 6, 7]] * 3, min_shared=1) == [(2, [0, 1, 2])]  # identical inputs
    assert share_groups([], 4) == [] and share_groups([[1, 2]], 1) == []


def test_a_group_never_shrinks_to_take_a_member():
    s = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [1, 2, 3, 9, 9, 9]]
    assert share_groups(s, min_shared=2) == [(5, [0, 1])]


def test_group_batches_respect_rows_tokens_and_slack():
    lengths = [10] * 9 + [20, 20]
    groups = [(5, [0, 1, 2]), (5, [3, 4, 5]), (5, [6, 7, 8]), (8, [9, 10])]
    batches = group_batches(groups, lengths, batch_size=6, max_tokens=10**6)
    assert all(min(g[0] for g in b) >= 0.85 * max(g[0] for g in b) for b in batches)
    assert all(sum(len(m) for _, m in b) <= 6 for b in batches)
    assert sorted(i for b in batches for _, m in b for i in m) == list(range(11))
    assert batches[0] == [(8, [9, 10])]  # 5 < 0.85 x 8: the longest start is not cut to 5
    tight = group_batches(groups, lengths, batch_size=32, max_tokens=15)
    assert all(len(b) == 1 for b in tight)  # 3 rows x 5 rest tokens = 15: one group a batch
    loose = group_batches([(10, [0, 1]), (9, [2, 3])], [20] * 4, batch_size=32, max_tokens=10**6)
    assert loose == [[(10, [0, 1]), (9, [2, 3])]]  # 9 >= 0.85 x 10: one batch, sharing 9


@pytest.mark.parametrize("template", ["paper", "short"])
@pytest.mark.parametrize("batch_size", [2, 5, 32])
def test_shared_starts_equal_full_sequence(template, batch_size):
    model, tok = tiny_classifier(seed=3)
    ex = examples_of(SHARED, ["entailment"] * len(SHARED))
    want = full_sequence_proba(model, tok, template, SHARED)
    shared = predict_proba(model, tok, template, ex, batch_size=batch_size, share_starts=True)
    plain = predict_proba(model, tok, template, ex, batch_size=batch_size, share_starts=False)
    np.testing.assert_allclose(shared, want, atol=1e-5)
    np.testing.assert_allclose(plain, want, atol=1e-5)


def test_shared_starts_compute_fewer_tokens():
    model, tok = tiny_classifier(seed=3)
    ex = examples_of(SHARED, ["entailment"] * len(SHARED))
    seen: list[int] = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(i[0].numel()))
    try:
        predict_proba(model, tok, "paper", ex, batch_size=32, max_tokens=10**6, share_starts=False)
        plain, seen[:] = sum(seen), []
        predict_proba(model, tok, "paper", ex, batch_size=32, max_tokens=10**6, share_starts=True)
        shared = sum(seen)
    finally:
        hook.remove()
    assert shared < 0.8 * plain


def test_shared_starts_through_a_lora_adapter():
    model, tok = tiny_classifier(seed=4)
    peft_model = with_random_lora(model)
    want = full_sequence_proba(peft_model, tok, "short", SHARED)
    got = predict_proba(peft_model, tok, "short", examples_of(SHARED, ["neutral"] * len(SHARED)), batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batch_plan_falls_back_to_length_batches_when_groups_save_little():
    lengths = [30, 30, 30, 30]
    flat = batch_plan(lengths, [], batch_size=8, max_tokens=10**6)
    assert flat == [("single", [0, 1, 2, 3])]
    small = batch_plan(lengths, [(2, [0, 1])], batch_size=8, max_tokens=10**6)  # saves 2 of 120 tokens
    assert small == flat
    big = batch_plan(lengths, [(25, [0, 1, 2, 3])], batch_size=8, max_tokens=10**6)  # 25 + 4 x 5 of 120
    assert big == [("grouped", [(25, [0, 1, 2, 3])])]
    assert planned_tokens(big, lengths) == 25 + 4 * 5 and planned_tokens(flat, lengths) == 120
