"""Heuristic filters on hand-built pairs with hand-counted kept / dropped, and `blindspot filter`."""

from __future__ import annotations

import json

import pytest

from blindspot import filters, heuristics
from blindspot.cli import main as cli_main
from blindspot.data.example import NLIExample, load_examples, save_examples
from blindspot.errors import ConfigError

# (label, premise, hypothesis, has lexical overlap, has subsequence) -- features by hand.
PAIRS = [
    ("entailment", "the cat sat on the mat", "the cat sat", True, True),
    ("entailment", "the cat sat on the mat", "a dog ran", False, False),
    ("neutral", "the cat sat on the mat", "the mat sat on the cat", True, False),
    ("contradiction", "the dog barked", "the cat meowed", False, False),
    ("contradiction", "the doctor saw the lawyer", "the lawyer saw the doctor", True, False),
    ("neutral", "the judge who saw the actor slept", "the actor slept", True, True),
]


def _examples(pairs=PAIRS) -> list[NLIExample]:
    return [NLIExample(id=f"x{i}", premise=p, hypothesis=h, label=lab) for i, (lab, p, h, *_) in enumerate(pairs)]


def _ids(examples) -> list[str]:
    return [e.id for e in examples]


def test_fixture_features_match_the_heuristics():
    for _, p, h, overlap, subseq in PAIRS:
        assert heuristics.lexical_overlap(p, h) is overlap, (p, h)
        assert heuristics.subsequence(p, h) is subseq, (p, h)


def test_biased_lexical_overlap_is_the_papers_filter():
    kept, dropped, report = filters.FILTERS["biased-lexical-overlap"](_examples())
    assert _ids(kept) == ["x0", "x3"]  # entailment with overlap, contradiction without
    assert _ids(dropped) == ["x1", "x2", "x4", "x5"]
    assert report["per_label"] == {"entailment": {"in": 2, "kept": 1, "dropped": 1},
                                   "neutral": {"in": 2, "kept": 0, "dropped": 2},
                                   "contradiction": {"in": 2, "kept": 1, "dropped": 1}}
    assert (report["n_in"], report["n_kept"], report["n_dropped"]) == (6, 2, 4)
    assert report["feature"] == "lexical_overlap" and report["direction"] == "biased"


def test_anti_biased_keeps_exactly_what_biased_drops():
    ex = _examples()
    kept, dropped, report = filters.anti_biased_lexical_overlap(ex)
    assert _ids(kept) == ["x1", "x2", "x4", "x5"] and _ids(dropped) == ["x0", "x3"]
    assert report["per_label"]["neutral"] == {"in": 2, "kept": 2, "dropped": 0}
    for feature in ("lexical_overlap", "subsequence"):
        b_kept, _, _ = filters.heuristic_filter(ex, feature, biased=True)
        a_kept, _, _ = filters.heuristic_filter(ex, feature, biased=False)
        assert sorted(_ids(b_kept) + _ids(a_kept)) == _ids(ex)


def test_biased_subsequence():
    kept, dropped, report = filters.biased_subsequence(_examples())
    assert _ids(kept) == ["x0", "x2", "x3", "x4"] and _ids(dropped) == ["x1", "x5"]
    assert report["per_label"]["neutral"] == {"in": 2, "kept": 1, "dropped": 1}


def test_two_way_labels_count_as_non_entailment():
    ex = [NLIExample("h0", "the doctor saw the lawyer", "the lawyer saw the doctor", "non-entailment"),
          NLIExample("h1", "the doctor saw the lawyer", "the doctor saw the lawyer", "entailment"),
          NLIExample("h2", "the doctor slept", "the cat ran", "non-entailment")]
    kept, dropped, report = filters.biased_lexical_overlap(ex)
    assert _ids(kept) == ["h1", "h2"] and _ids(dropped) == ["h0"]
    assert report["per_label"]["non-entailment"] == {"in": 2, "kept": 1, "dropped": 1}


def test_constituent_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(heuristics, "CONSTITUENT_AVAILABLE", False)
    monkeypatch.setattr(heuristics, "CONSTITUENT_REASON", "no parser installed (test)")
    for name in ("biased-constituent", "anti-biased-constituent"):
        with pytest.raises(ConfigError, match=r"constituent.*unavailable.*no parser installed \(test\)"):
            filters.FILTERS[name](_examples())
    with pytest.raises(ConfigError, match="constituent"):  # fails before the input is read
        filters.run_filter("/nonexistent/synthetic.jsonl", "biased-constituent", "/nonexistent/out")


def test_unknown_filter_name():
    with pytest.raises(ConfigError, match="unknown filter 'biased-typo'.*biased-lexical-overlap"):
        filters.get_filter("biased-typo")


def test_run_filter_writes_outputs(tmp_path):
    src = tmp_path / "synthetic.jsonl"
    save_examples(src, _examples())
    out = filters.run_filter(str(src), "biased-lexical-overlap", tmp_path / "out", keep_dropped=True)
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "dropped.jsonl", "kept.jsonl", "report.json"]
    assert _ids(load_examples(out / "kept.jsonl")) == ["x0", "x3"]
    assert _ids(load_examples(out / "dropped.jsonl")) == ["x1", "x2", "x4", "x5"]
    report = json.loads((out / "report.json").read_text())
    assert report["filter"] == "biased-lexical-overlap" and report["n_kept"] == 2
    assert "git_commit" in report["meta"]
    # a rerun without --keep-dropped leaves no stale dropped.jsonl behind
    filters.run_filter(str(src), "biased-lexical-overlap", out)
    assert not (out / "dropped.jsonl").exists() and (out / "DONE").exists()


def test_cli_filter(tmp_path, capsys):
    src = tmp_path / "synthetic.jsonl"
    save_examples(src, _examples())
    rc = cli_main(["filter", str(src), "--filter", "anti-biased-subsequence", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "neutral: kept" in out and "wrote" in out
    assert _ids(load_examples(tmp_path / "o" / "kept.jsonl")) == ["x1", "x5"]
    assert not (tmp_path / "o" / "dropped.jsonl").exists()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blindspot filter: error:"), err
    return err[0]


def test_cli_unknown_filter_name(tmp_path, capsys):
    src = tmp_path / "synthetic.jsonl"
    save_examples(src, _examples())
    rc = cli_main(["filter", str(src), "--filter", "nope", "--out", str(tmp_path / "o")])
    assert rc == 2 and "unknown filter 'nope'" in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_cli_missing_input(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    rc = cli_main(["filter", str(missing), "--filter", "biased-lexical-overlap", "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.jsonl" in _one_line_error(capsys)
    assert not (tmp_path / "o" / "DONE").exists()


def test_grid_filter_stage_reads_the_pool_for_original_sources(tmp_path):
    """augment source original+FILTER: the filter stage runs on the prepared pool, not synthetic data."""
    from blindspot.stages import Runtime
    from blindspot.stages import filter as filter_stage

    save_examples(tmp_path / "prepare" / "pool.jsonl", _examples())
    spec = filter_stage.Spec(filter="biased-lexical-overlap", input="pool", overlap_rule="paper")
    facts = filter_stage.run(spec, {"data": tmp_path / "prepare"}, tmp_path / "out", Runtime())
    assert not (tmp_path / "out" / "meta.json").exists() and facts["examples_per_s"] > 0  # meta.json: the store's
    kept = load_examples(tmp_path / "out" / "kept.jsonl")
    expected, _, _ = filters.get_filter("biased-lexical-overlap")(_examples())
    assert [e.id for e in kept] == [e.id for e in expected] and kept


# Pairs on which the two overlap rules disagree (attached punctuation), features by hand.
RULE_PAIRS = [
    NLIExample("r0", "The doctor saw the lawyer.", "The lawyer saw the doctor.", "entailment"),    # words only
    NLIExample("r1", "The doctor saw the lawyer .", "The lawyer saw the doctor .", "entailment"),  # both
    NLIExample("r2", "The doctor slept, then left.", "The doctor left.", "neutral"),             # both
    NLIExample("r3", "The doctor slept, then left.", "The doctor slept.", "contradiction"),      # words only
]


def test_overlap_rule_changes_what_the_biased_filter_keeps_and_is_reported():
    kept_p, dropped_p, rep_p = filters.biased_lexical_overlap(RULE_PAIRS, rule="paper")
    kept_w, dropped_w, rep_w = filters.biased_lexical_overlap(RULE_PAIRS, rule="words")
    assert _ids(kept_p) == ["r1", "r3"] and _ids(dropped_p) == ["r0", "r2"]
    assert _ids(kept_w) == ["r0", "r1"] and _ids(dropped_w) == ["r2", "r3"]
    assert (rep_p["overlap_rule"], rep_w["overlap_rule"]) == ("paper", "words")
    assert "lex_finder" in rep_p["overlap_rule_text"] and "punctuation dropped" in rep_w["overlap_rule_text"]
    assert filters.biased_lexical_overlap(RULE_PAIRS)[2]["overlap_rule"] == "paper"  # the default
    with pytest.raises(ConfigError, match="overlap_rule: 'lex'"):
        filters.biased_lexical_overlap(RULE_PAIRS, rule="lex")


def test_run_filter_and_cli_record_the_rule(tmp_path, capsys):
    src = tmp_path / "synthetic.jsonl"
    save_examples(src, RULE_PAIRS)
    out = filters.run_filter(str(src), "biased-lexical-overlap", tmp_path / "words", overlap_rule="words")
    assert json.loads((out / "report.json").read_text())["overlap_rule"] == "words"
    assert _ids(load_examples(out / "kept.jsonl")) == ["r0", "r1"]
    assert cli_main(["filter", str(src), "--filter", "biased-lexical-overlap", "--out", str(tmp_path / "p")]) == 0
    assert "overlap rule: paper" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "report.json").read_text())["overlap_rule"] == "paper"
    assert cli_main(["filter", str(src), "--filter", "biased-lexical-overlap", "--overlap-rule", "words",
                     "--out", str(tmp_path / "w2")]) == 0
    assert _ids(load_examples(tmp_path / "w2" / "kept.jsonl")) == ["r0", "r1"]
