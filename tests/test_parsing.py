"""Strict parsing of generated text: well-formed outputs, a corpus of hostile ones, dedup, leakage."""

from __future__ import annotations

import os

import pytest

from blindspot.generation.parsing import (REJECT_REASONS, GenerationTemplate, LeakageIndex, PairFilter, check_template,
                                          normalise, parse_generation)

T = GenerationTemplate()
GOOD = " Premise: A man sleeps on a bench. Hypothesis: A person rests. -- This is the end of the example."


def test_well_formed_output_parses_to_the_pair():
    p = parse_generation(GOOD, "entailment")
    assert p.ok and (p.premise, p.hypothesis) == ("A man sleeps on a bench.", "A person rests.")


def test_template_round_trip_parses_back():
    text = T.full_text("neutral", "Two dogs run.", "Animals are outside.")
    assert text.startswith(T.prompt("neutral"))
    p = parse_generation(text[len(T.prompt("neutral")):], "neutral")
    assert (p.premise, p.hypothesis) == ("Two dogs run.", "Animals are outside.")


def test_second_example_after_the_marker_is_ignored():
    second = (" This is an example where the relationship between the premise and the hypothesis is neutral."
              " Premise: Other. Hypothesis: Thing. -- This is the end of the example.")
    p = parse_generation(GOOD + second, "entailment")
    assert (p.premise, p.hypothesis) == ("A man sleeps on a bench.", "A person rests.")


@pytest.mark.parametrize("text,reason", [
    (" Premise: A man sleeps. Hypothesis: A person rests.", "no_marker"),
    ("", "no_marker"),
    (" Hypothesis: A person rests. Premise: A man sleeps. -- This is the end of the example.", "wrong_order"),
    (" Premise: A man sleeps. -- This is the end of the example.", "missing_hypothesis"),
    (" Hypothesis: A person rests. -- This is the end of the example.", "missing_premise"),
    (" Premise:  Hypothesis: A person rests. -- This is the end of the example.", "empty_premise"),
    (" Premise: A man sleeps. Hypothesis:   -- This is the end of the example.", "empty_hypothesis"),
    (" Premise: a Premise: b Hypothesis: c -- This is the end of the example.", "repeated_field"),
    (" Note: Premise: a Hypothesis: c -- This is the end of the example.", "extra_text"),
    (" Premise: a This is an example where the relationship between the premise and the hypothesis is "
     "neutral. Hypothesis: c -- This is the end of the example.", "label_mismatch"),
    (" Premise: a This is an example where the relationship between the premise and the hypothesis is "
     "entailment. Hypothesis: c -- This is the end of the example.", "restated_prefix"),
    (" Premise: a\x00b Hypothesis: c -- This is the end of the example.", "bad_characters"),
    (" Premise: a\ufffd Hypothesis: c -- This is the end of the example.", "bad_characters"),
])
def test_malformed_outputs_get_their_reason(text, reason):
    p = parse_generation(text, "entailment")
    assert not p.ok and p.reason == reason and p.premise is None
    assert reason in REJECT_REASONS


def test_python_expression_is_kept_as_text_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = "__import__('os').system('touch PWNED')"
    for text in (f" Premise: {payload} Hypothesis: {payload} -- This is the end of the example.",
                 f" {payload} -- This is the end of the example.", payload,
                 f" Premise: {{payload}} Hypothesis: {{hypothesis}}{payload} -- This is the end of the example."):
        parse_generation(text, "neutral")
    p = parse_generation(f" Premise: {payload} Hypothesis: x -- This is the end of the example.", "neutral")
    assert p.premise == payload
    assert not os.path.exists(tmp_path / "PWNED")


def test_unbalanced_quotes_and_unicode_are_literal():
    text = ' Premise: He said "hello and \'bye Hypothesis: Ça va, 東京 ✓ 🙂 -- This is the end of the example.'
    p = parse_generation(text, "contradiction")
    assert p.premise == 'He said "hello and \'bye' and p.hypothesis == "Ça va, 東京 ✓ 🙂"


def test_ten_thousand_characters_is_too_long_or_no_marker():
    long = "word " * 2000
    assert parse_generation(f" Premise: {long} Hypothesis: x -- This is the end of the example.",
                            "neutral").reason == "too_long"
    assert parse_generation(" Premise: " + "x" * 10_000, "neutral").reason == "no_marker"
    assert parse_generation(f" Premise: {long} Hypothesis: x -- This is the end of the example.", "neutral",
                            max_chars=20_000).ok


def test_custom_template_with_hypothesis_first():
    t = GenerationTemplate(prefix="Label: {label}.", body="\nH: {hypothesis}\nP: {premise}", end_marker="\n###")
    assert check_template(t) == []
    p = parse_generation("\nH: b\nP: a\n###\nLabel: x.", "neutral", t)
    assert (p.premise, p.hypothesis) == ("a", "b")
    assert parse_generation("\nP: a\nH: b\n###", "neutral", t).reason == "wrong_order"


def test_bad_templates_are_named():
    assert check_template(GenerationTemplate(prefix="no label")) == ["prefix must contain {label} exactly once"]
    assert "body must contain {hypothesis} exactly once" in check_template(GenerationTemplate(body=" P: {premise}"))
    assert check_template(GenerationTemplate(body="{premise}{hypothesis}"))


def test_normalise_collapses_whitespace_and_case():
    assert normalise("  A  Man\tsleeps.\n") == normalise("a man sleeps.") == "a man sleeps."


def test_pair_filter_dedups_and_drops_leaks():
    leak = LeakageIndex.from_pairs([("The doctor saw the lawyer.", "The lawyer saw the doctor.")])
    f = PairFilter(leak)
    assert f.offer("A man sleeps.", "A person rests.") == (None, None)
    assert f.offer("A man sleeps.", "A person rests.") == ("duplicate", None)
    assert f.offer("A man sleeps.", "A person  rests.") == (None, None)  # dedup is exact
    assert f.offer("the doctor  saw the LAWYER.", "The lawyer saw the doctor.") == ("leak_pair", "leak_pair")
    assert f.offer("Something.", "the doctor saw the lawyer.") == ("leak_hypothesis", "leak_hypothesis")
    kept = PairFilter(leak, keep_leaked=True)
    assert kept.offer("The doctor saw the lawyer.", "The lawyer saw the doctor.") == (None, "leak_pair")


@pytest.mark.parametrize("text,reason", [
    (" Premise: a b c Hypothesis: d e", None),  # may still end well
    (" Premise: a Hypothesis: b This is an example where the relationship between the premise and the "
     "hypothesis is neutral.", "label_mismatch"),
    (" Premise: a Hypothesis: b This is an example where the relationship between the premise and the "
     "hypothesis is entailment.", "restated_prefix"),
    (" Premise: a Hypothesis: b Premise: c", "repeated_field"),
    (" Premise: " + "x" * 3000, "too_long"),
])
def test_doomed_unfinished_text_is_rejected_whatever_follows(text, reason):
    from blindspot.generation.parsing import doomed_reason

    assert doomed_reason(text, "entailment") == reason
    if reason is not None:  # however it ends, the full parse rejects it
        assert not parse_generation(text + " more. -- This is the end of the example.", "entailment").ok
