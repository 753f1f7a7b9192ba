"""The reliance measure: constant predictors score 0, 'entailment iff overlap' scores 1, a mixed case by hand."""

from __future__ import annotations

import pytest

from blindspot.errors import DataError
from blindspot.reliance import overlap_flags, reliance, reliance_all
from blindspot.stats import unpaired_difference

HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
# general-set pairs: (premise, hypothesis, gold); the first two overlap fully, the rest do not
GENERAL = [("The cat sat on the mat.", "The cat sat.", "entailment"),
           ("The dog ran to the park.", "The dog ran.", "neutral"),
           ("A man is eating soup.", "Nobody eats.", "contradiction"),
           ("Two girls play chess.", "Kids are asleep.", "contradiction"),
           ("She bought bread today.", "She owns a bakery.", "neutral"),
           ("The train left late.", "It was on time.", "contradiction")]


def hans_rows(predict) -> list[dict]:
    rows = []
    for h in HEURISTICS:
        for i in range(10):
            for gold in ("entailment", "non-entailment"):
                rows.append({"id": f"{h}-{gold}-{i}", "gold": gold, "heuristic": h, "pred": predict(True)})
    return rows


def general_rows(predict) -> list[dict]:
    rows = []
    for i, (p, h, gold) in enumerate(GENERAL * 5):
        flags = overlap_flags(p, h)
        rows.append({"id": f"m{i}", "gold": gold, "overlap": flags, "pred": predict(flags["words"])})
    return rows


@pytest.mark.parametrize("answer", ["entailment", "non-entailment", "neutral", "contradiction"])
def test_constant_predictors_score_zero_with_zero_inside_the_interval(answer):
    const = lambda overlap: answer  # noqa: E731
    for row in reliance_all(hans_rows(const), general_rows(const)):
        assert row["value"] == 0
        assert row["ci_low"] < 0 < row["ci_high"]


def test_entailment_exactly_when_the_words_overlap_scores_one():
    iff = lambda overlap: "entailment" if overlap else "contradiction"  # noqa: E731
    rows = reliance_all(hans_rows(iff), general_rows(iff))
    assert [r["heuristic"] for r in rows] == sorted(HEURISTICS)
    assert all(r["value"] == 1 for r in rows)
    # the baseline is the non-entailment pairs without overlap: 4 of 6 pairs x 5 copies
    assert rows[0]["baseline_n"] == 20 and rows[0]["challenge_n"] == 10


def test_mixed_case_matches_a_hand_computation():
    hans = hans_rows(lambda o: "entailment")
    for r in hans[1:14:2]:  # 7 of the 10 lexical-overlap non-entailment rows answered correctly
        r["pred"] = "non-entailment"
    general = general_rows(lambda o: "neutral")
    no_overlap = [r for r in general if r["gold"] != "entailment" and not r["overlap"]["words"]]
    for r in no_overlap[:5]:  # 5 of 20 baseline rows answered entailment
        r["pred"] = "entailment"
    got = reliance(hans, general, "lexical_overlap")
    assert (got["challenge_entailment"], got["challenge_n"]) == (3, 10)
    assert (got["baseline_entailment"], got["baseline_n"]) == (5, 20)
    assert got["value"] == pytest.approx(3 / 10 - 5 / 20)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(unpaired_difference(3, 10, 5, 20)[1:])


def test_rows_without_overlap_flags_are_refused():
    general = [{"id": "x", "gold": "neutral", "pred": "neutral"}]
    with pytest.raises(DataError, match="no overlap flag"):
        reliance(hans_rows(lambda o: "entailment"), general, "lexical_overlap", where="m.jsonl")


def test_paired_bootstrap_of_two_classifiers():
    from blindspot.compare import compare_reliance

    always = lambda o: "entailment"  # noqa: E731
    iff = lambda o: "entailment" if o else "neutral"  # noqa: E731
    same = compare_reliance(hans_rows(iff), general_rows(iff), hans_rows(iff), general_rows(iff),
                            "lexical_overlap", "words", seed=3)
    assert same["diff"] == 0 and same["diff_ci"] == [0, 0] and same["p_bootstrap"] == 1
    got = compare_reliance(hans_rows(iff), general_rows(iff), hans_rows(always), general_rows(always),
                           "lexical_overlap", "words", seed=3)
    assert (got["reliance_a"], got["reliance_b"], got["diff"]) == (1, 0, 1)
    assert got["p_bootstrap"] == pytest.approx(2 / (got["n_boot"] + 1))  # every replicate is 1: the floor
    again = compare_reliance(hans_rows(iff), general_rows(iff), hans_rows(always), general_rows(always),
                             "lexical_overlap", "words", seed=3)
    assert again == got


def test_compare_cli_with_reliance(tmp_path, capsys):
    import json

    from blindspot.cli import main as cli_main

    iff = lambda o: "entailment" if o else "neutral"  # noqa: E731
    always = lambda o: "entailment"  # noqa: E731
    files = {}
    for name, rows in (("ha", hans_rows(iff)), ("hb", hans_rows(always)), ("ga", general_rows(iff)),
                       ("gb", general_rows(always))):
        for r in rows:
            r["correct"] = r["pred"].replace("neutral", "non-entailment") == r["gold"] if name[0] == "h" else \
                r["pred"] == r["gold"]
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["compare", str(files["ha"]), str(files["hb"]), "--reliance", str(files["ga"]),
                     str(files["gb"]), "--overlap-rule", "words"]) == 0
    out = capsys.readouterr().out
    assert "reliance on lexical_overlap" in out and "A +1.0000  B +0.0000  A-B +1.0000" in out
