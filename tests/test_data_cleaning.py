"""Tests for blindspot.data.cleaning: the paper's cleaning, the validation split, seeded sampling."""

from __future__ import annotations

import pytest

from blindspot.data import MNLI_LABELS, NLIExample, NLISet, clean_mnli, sample_balanced, sample_examples, split_validation, stratified_sample
from blindspot.errors import ConfigError, DataError


def _ex(i, p, h, label, **kw):
    return NLIExample(id=str(i), premise=p, hypothesis=h, label=label, **kw)


def _dirty() -> NLISet:
    rows = [
        _ex(1, "A", "a", "entailment"),
        _ex(2, "B", "b", "-"),                 # no gold label
        _ex(3, "C", "c", "neutral"),
        _ex(4, "C", "c", "neutral"),           # duplicate, same label: both copies go
        _ex(5, "D", "d", "entailment"),
        _ex(6, "D", "d", "contradiction"),     # duplicate with another label: both go
        _ex(7, "D", "d", "entailment"),        # third copy
        _ex(8, "E", "e", "contradiction"),
        _ex(9, "E", "x", "contradiction"),     # same premise, other hypothesis: kept
        _ex(10, "F", "f", "-"),
        _ex(11, "F", "f", "neutral"),          # '-' copy dropped first, so this one is unique: kept
    ]
    return NLISet("mnli-train", MNLI_LABELS, rows, meta={"dropped_no_gold": 3})  # loader dropped 3 more


def test_clean_drops_no_gold_then_all_copies_of_duplicates():
    s, rep = clean_mnli(_dirty())
    assert [e.id for e in s] == ["1", "8", "9", "11"]
    assert rep == {"input_rows": 14, "removed_no_gold": 5, "removed_duplicates": 5, "duplicated_pairs": 2,
                   "duplicated_pairs_with_conflicting_labels": 1, "output_rows": 4}
    assert s.meta["cleaning"] == rep and s.meta["dropped_no_gold"] == 0
    assert clean_mnli(s)[1]["removed_no_gold"] == 0  # cleaning twice counts nothing twice


def _balanced(n_per_label=20) -> NLISet:
    ex = [_ex(f"{lab[0]}{i}", f"p{lab}{i}", f"h{i}", lab, subcase=f"s{i % 3}") for lab in MNLI_LABELS for i in range(n_per_label)]
    return NLISet("mnli-train", MNLI_LABELS, ex)


def test_split_validation_is_balanced_seeded_and_disjoint():
    s = _balanced()
    val, pool = split_validation(s, per_label=5, seed=1)
    assert val.label_counts() == {lab: 5 for lab in MNLI_LABELS} and len(pool) == 45
    assert not {e.id for e in val} & {e.id for e in pool}
    assert [e.id for e in split_validation(s, 5, 1)[0]] == [e.id for e in val]
    assert [e.id for e in split_validation(s, 5, 2)[0]] != [e.id for e in val]
    assert (val.name, pool.name) == ("mnli-train-validation", "mnli-train-pool")
    with pytest.raises(ConfigError, match="only 20 examples labelled 'entailment'"):
        split_validation(s, per_label=21)
    dup = NLISet("x", MNLI_LABELS, s.examples + s.examples[:1])
    with pytest.raises(DataError, match="not unique"):
        split_validation(dup, 1)


def test_split_validation_first_takes_the_first_rows_of_each_label_in_file_order():
    rng = __import__("random").Random(3)
    rows = _balanced().examples
    rng.shuffle(rows)  # interleaved labels, as in a real file
    s = NLISet("mnli-train", MNLI_LABELS, rows)
    val, pool = split_validation(s, per_label=4, seed=99, mode="first")
    want = {e.id for lab in MNLI_LABELS for e in [r for r in rows if r.label == lab][:4]}
    assert {e.id for e in val} == want and len(pool) == len(rows) - 12
    assert [e.id for e in val] == [e.id for e in rows if e.id in want]  # file order kept
    assert [e.id for e in split_validation(s, 4, seed=0, mode="first")[0]] == [e.id for e in val]  # no seed
    assert val.meta["split_validation"] == {"validation_per_label": 4, "mode": "first"}
    assert split_validation(s, 4, 0)[0].meta["split_validation"]["mode"] == "sample"
    with pytest.raises(ConfigError, match="validation mode: 'last'"):
        split_validation(s, 4, mode="last")


def test_sample_examples_pandas_method_is_the_references_draw():
    import pandas as pd

    pool = _balanced(30).examples
    frame = pd.DataFrame({"id": [e.id for e in pool]})
    for n in (1, 7, 45, len(pool)):
        got = [e.id for e in sample_examples(pool, n, 42, method="pandas")]
        assert got == frame.sample(n=n, random_state=42)["id"].tolist()  # pool.sample(n, random_state=42)
    assert [e.id for e in sample_examples(pool, 10, 42, method="pandas")] == \
        [e.id for e in sample_examples(pool, 40, 42, method="pandas")][:10]  # nested in n, as ours
    with pytest.raises(ConfigError, match="sampling method: 'numpy'"):
        sample_examples(pool, 3, 0, method="numpy")


def test_sample_examples_seeded_nested_and_excluding():
    s = _balanced()
    a, b = sample_examples(s, 10, seed=3), sample_examples(s, 25, seed=3)
    assert [e.id for e in b[:10]] == [e.id for e in a] and len({e.id for e in b}) == 25
    assert sample_examples(s.examples, 10, seed=4) != a
    excl = {e.id for e in a}
    c = sample_examples(s, 50, seed=3, exclude_ids=excl)
    assert not excl & {e.id for e in c}
    with pytest.raises(ConfigError, match="cannot sample 51 examples: 50 available after excluding 10 ids"):
        sample_examples(s, 51, seed=3, exclude_ids=excl)


def test_sample_balanced_counts_and_exclusion():
    s = _balanced()
    out = sample_balanced(s, 10, seed=0, labels=MNLI_LABELS, exclude_ids={"e0", "e1"})
    counts = {lab: sum(e.label == lab for e in out) for lab in MNLI_LABELS}
    assert counts == {"entailment": 4, "neutral": 3, "contradiction": 3}
    assert not {"e0", "e1"} & {e.id for e in out}
    assert [e.id for e in out] == [e.id for e in sample_balanced(s, 10, 0, MNLI_LABELS, {"e0", "e1"})]
    with pytest.raises(ConfigError, match="cannot sample 21 examples labelled 'entailment': 20 available"):
        sample_balanced(s, 63, 0, MNLI_LABELS)


def test_stratified_sample_per_subcase():
    s = stratified_sample(_balanced(), per_group=4, key="subcase", seed=0)
    assert sorted(e.subcase for e in s) == ["s0"] * 4 + ["s1"] * 4 + ["s2"] * 4
    assert s.name == "mnli-train" and s.meta["stratified"]["per_group"] == 4
    with pytest.raises(ConfigError, match="not an example field"):
        stratified_sample(_balanced(), 1, key="colour")
