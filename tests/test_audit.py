"""Audit on hand-built sets with hand-computed numbers, `blindspot audit`, and real MNLI / HANS."""

from __future__ import annotations

import json
import random

import pytest

from blindspot import audit
from blindspot.cli import main as cli_main
from blindspot.data.example import NLIExample, save_examples

# features by hand: x0 overlap + subsequence; x2 overlap only; x1, x3 neither.
SET_A = [
    NLIExample("x0", "the cat sat", "the cat", "entailment"),
    NLIExample("x1", "the cat sat", "a dog ran", "entailment"),
    NLIExample("x2", "the cat sat", "cat the", "neutral"),
    NLIExample("x3", "dogs bark loudly", "cats meow", "contradiction"),
]
SET_B = [
    NLIExample("y0", "the cat sat", "the cat sat", "entailment"),
    NLIExample("y1", "the cat sat", "the cat sat", "neutral"),
]


def test_feature_shares_by_label():
    a = audit.audit_sets({"a": SET_A})["sets"]["a"]
    lo, ss = a["features"]["lexical_overlap"], a["features"]["subsequence"]
    assert lo["share"] == {"entailment": 0.5, "neutral": 1.0, "contradiction": 0.0,
                           "non-entailment": 0.5, "all": 0.5}
    assert ss["share"] == {"entailment": 0.5, "neutral": 0.0, "contradiction": 0.0,
                           "non-entailment": 0.0, "all": 0.25}
    assert (lo["n_with"], lo["entailment_share_with"]) == (2, 0.5)
    assert (ss["n_with"], ss["entailment_share_with"]) == (1, 1.0)
    assert a["entailment_share"] == 0.5
    assert a["groups"] == {"entailment": 2, "neutral": 1, "contradiction": 1, "non-entailment": 2, "all": 4}
    assert a["label_counts"] == {"entailment": 2, "neutral": 1, "contradiction": 1}


def test_lengths_and_duplicates():
    a = audit.audit_sets({"a": SET_A})["sets"]["a"]
    assert a["lengths"]["premise_words"] == 3.0
    assert a["lengths"]["hypothesis_words"] == 2.25  # (2 + 3 + 2 + 2) / 4
    assert a["lengths"]["hypothesis_premise_ratio"] == pytest.approx(0.75)  # mean of 2/3, 1, 2/3, 2/3
    assert a["duplicates"] == {"pairs": 0.0, "premises": 0.5, "hypotheses": 0.0}
    b = audit.audit_sets({"b": SET_B})["sets"]["b"]
    assert b["duplicates"] == {"pairs": 0.5, "premises": 0.5, "hypotheses": 0.5}


def test_distinct_n_by_hand():
    texts = ["the cat sat", "the cat ran"]
    assert audit.distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert audit.distinct_n(texts, 2) == pytest.approx(3 / 4)  # (the cat) twice, (cat sat), (cat ran)
    assert audit.distinct_n(texts, 3) == 1.0
    assert audit.distinct_n(["a cat"], 3) is None  # no trigram at all: undefined, not 0
    d = audit.audit_sets({"a": SET_A})["sets"]["a"]["diversity"]["full"]
    assert d["hypothesis"] == pytest.approx({"distinct_1": 7 / 9, "distinct_2": 1.0, "distinct_3": 1.0})
    assert d["premise"] == pytest.approx({"distinct_1": 0.5, "distinct_2": 0.5, "distinct_3": 0.5})


def test_equal_size_subsample_is_seeded_and_order_free():
    ab = audit.audit_sets({"a": SET_A, "b": SET_B}, seed=3)
    ba = audit.audit_sets({"b": SET_B, "a": SET_A}, seed=3)
    assert ab["subsample_size"] == 2
    assert ab["sets"] == ba["sets"]
    sub = random.Random(3).sample(SET_A, 2)
    expected = audit.diversity([audit.heuristics.words(e.premise) for e in sub],
                               [audit.heuristics.words(e.hypothesis) for e in sub])
    assert ab["sets"]["a"]["diversity"]["subsample"] == expected
    # a set of exactly min(size) pairs: the subsample is the set itself
    assert ab["sets"]["b"]["diversity"]["subsample"] == ab["sets"]["b"]["diversity"]["full"]


def test_two_way_labels_and_markdown():
    hans = [NLIExample("h0", "the doctor saw the lawyer", "the lawyer saw the doctor", "non-entailment"),
            NLIExample("h1", "the doctor saw the lawyer", "the doctor saw", "entailment")]
    result = audit.audit_sets({"mnli": SET_A, "hans": hans})
    h = result["sets"]["hans"]
    assert h["labels"] == ["entailment", "non-entailment"]
    assert h["features"]["lexical_overlap"]["share"] == {"entailment": 1.0, "non-entailment": 1.0, "all": 1.0}
    md = audit.audit_markdown(result).splitlines()
    assert md[0] == "| metric | mnli | hans |"
    table = [line for line in md if line.startswith("|")]
    assert all(line.count("|") == 4 for line in table)  # every row has one cell per set
    assert "| lexical_overlap: % of neutral pairs | 100.0% | – |" in md
    assert "| entailment % among lexical_overlap pairs | 50.0% (n=2) | 50.0% (n=2) |" in md


def test_parse_named():
    from blindspot.data.source_args import split_name

    assert split_name("synthetic=runs/x/kept.jsonl") == ("synthetic", "runs/x/kept.jsonl")
    assert split_name("runs/x/kept.jsonl") == (None, "runs/x/kept.jsonl")
    assert split_name("hub:nyu-mll/multi_nli:train") == (None, "hub:nyu-mll/multi_nli:train")
    assert split_name("dev.csv:premise=s1,hypothesis=s2,label=g") == (None, "dev.csv:premise=s1,hypothesis=s2,label=g")


def test_cli_audit_json_markdown_and_errors(tmp_path, capsys):
    save_examples(tmp_path / "synth.jsonl", SET_A)
    save_examples(tmp_path / "other.jsonl", SET_B)
    out = tmp_path / "audit.json"
    assert cli_main(["audit", str(tmp_path / "synth.jsonl"), f"b={tmp_path / 'other.jsonl'}",
                     "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["sets"]) == ["synth", "b"] and printed["subsample_size"] == 2
    assert json.loads(out.read_text())["sets"]["synth"]["n"] == 4
    assert cli_main(["audit", f"s={tmp_path / 'synth.jsonl'}", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| metric | s |")
    assert cli_main(["audit", f"s={tmp_path / 'synth.jsonl'}"]) == 0
    assert "distinct-2 hypotheses" in capsys.readouterr().out
    assert cli_main(["audit", str(tmp_path / "synth.jsonl"), str(tmp_path / "synth.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two sets are named 'synth'" in err[0]
    assert cli_main(["audit", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blindspot audit: error:") and "nope.jsonl" in err[0]


def test_overlap_rule_is_applied_and_recorded():
    pairs = [NLIExample("p0", "The doctor saw the lawyer.", "The lawyer saw the doctor.", "entailment"),
             NLIExample("p1", "The doctor saw the lawyer .", "The lawyer saw .", "neutral")]
    paper = audit.audit_sets({"s": pairs})
    words = audit.audit_sets({"s": pairs}, overlap_rule="words")
    assert paper["overlap_rule"] == "paper" and words["overlap_rule"] == "words"
    assert paper["sets"]["s"]["features"]["lexical_overlap"]["share"]["all"] == 0.5  # "lawyer." != "lawyer"
    assert words["sets"]["s"]["features"]["lexical_overlap"]["share"]["all"] == 1.0
    assert "overlap rule 'words'" in audit.audit_markdown(words)
    assert "lex_finder" in audit.audit_markdown(paper)


@pytest.mark.shared_data
def test_audit_real_mnli_and_hans(shared_data):
    result = audit.run_audit([f"mnli={shared_data / 'mnli-subset' / 'multinli_1.0_train.jsonl.gz'}",
                              f"hans={shared_data / 'hans-regen' / 'heuristics_evaluation_set.jsonl.gz'}"])
    mnli, hans = result["sets"]["mnli"], result["sets"]["hans"]
    assert mnli["n"] == 12_615 and hans["n"] == 30_000 and result["subsample_size"] == 12_615
    lo = mnli["features"]["lexical_overlap"]
    # The heuristic has a real basis in MNLI: overlap pairs are more often entailment...
    assert lo["entailment_share_with"] > mnli["entailment_share"] + 0.1
    # ...but full overlap is rare there, and common by construction in HANS.
    assert lo["share"]["all"] < 0.1 < hans["features"]["lexical_overlap"]["share"]["all"]
    assert hans["entailment_share"] == 0.5
    # MNLI hypotheses are shorter than premises; HANS draws on a tiny vocabulary.
    assert mnli["lengths"]["hypothesis_premise_ratio"] < 1.0
    sub = lambda s: s["diversity"]["subsample"]["hypothesis"]["distinct_1"]  # noqa: E731
    assert sub(hans) < sub(mnli)
