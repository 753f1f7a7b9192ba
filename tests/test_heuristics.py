"""Tests for the HANS heuristic features (blindspot.heuristics)."""

from __future__ import annotations

import pytest

from blindspot import heuristics as H


def test_words_lowercases_drops_punctuation_keeps_apostrophes():
    assert H.words("The doctor's cat, 'quietly' SAW 2 dogs!") == ["the", "doctor's", "cat", "quietly", "saw", "2", "dogs"]
    assert H.words("...  --") == []


@pytest.mark.parametrize("p,h,lo,sub", [
    ("The doctor saw the lawyer.", "The lawyer saw the doctor.", True, False),   # ln_subject/object_swap
    ("The doctor near the actor danced.", "The actor danced.", True, True),      # sn_PP_on_subject
    ("The doctor saw the lawyer.", "The lawyer saw.", True, False),              # words present, not contiguous
    ("The doctor saw the lawyer.", "A nurse slept.", False, False),
    ("Whether the doctor slept is unclear.", "The doctor slept", True, True),     # punctuation ignored
    ("The doctor slept.", "", False, False),                                       # empty hypothesis
    ("The Doctor slept.", "the doctor SLEPT", True, True),                        # case ignored
])
def test_words_rule_lexical_overlap_and_subsequence(p, h, lo, sub):
    assert H.lexical_overlap(p, h, rule="words") is lo
    assert H.subsequence(p, h, rule="words") is sub


@pytest.mark.parametrize("p,h,lo,sub", [
    # attached punctuation stays part of the token: "lawyer." is not "lawyer", "doctor." is not "doctor"
    ("The doctor saw the lawyer.", "The lawyer saw the doctor.", False, False),
    ("The doctor saw the lawyer .", "The lawyer saw the doctor .", True, False),   # HANS spacing: "." dropped
    ("The doctor near the actor danced.", "The actor danced.", True, True),       # same final token
    ("Whether the doctor slept is unclear.", "The doctor slept", True, True),
    ("The doctor slept, and left.", "The doctor left", False, False),             # "left." is not "left"
    ("He said: yes !", "He said: yes", True, True),                               # ':' stays, '!' token dropped
    ("The Doctor slept.", "the doctor SLEPT.", True, True),                       # case ignored
    # empty hypothesis (also: only '.', '?', '!' tokens): the reference counts it as overlap
    ("The doctor slept.", "", True, True),
    ("The doctor slept.", " . ? ", True, True),
])
def test_paper_rule_lexical_overlap_and_subsequence(p, h, lo, sub):
    assert H.lexical_overlap(p, h, rule="paper") is lo
    assert H.subsequence(p, h, rule="paper") is sub


def test_paper_rule_is_the_default_and_tokens():
    assert H.DEFAULT_OVERLAP_RULE == "paper"
    assert H.paper_tokens("The Doctor  left. ? Why !") == ["the", "doctor", "left.", "why"]
    assert H.lexical_overlap("The doctor saw the lawyer.", "The lawyer saw the doctor.") is False
    assert H.features("a b .", "B A")["lexical_overlap"] is True


def test_subsequence_implies_overlap_under_both_rules():
    pairs = [("The doctor near the actor danced.", "the actor danced."), ("a b c", "b c"), ("a b c", "c b"),
             ("x, y z.", "y z."), ("x, y z.", "x y"), ("Hi.", "")]
    for rule in H.OVERLAP_RULES:
        for p, h in pairs:
            assert not H.subsequence(p, h, rule) or H.lexical_overlap(p, h, rule), (rule, p, h)


def test_unknown_rule_is_a_config_error():
    from blindspot.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap_rule: 'lex' is not one of paper, words"):
        H.lexical_overlap("a", "a", rule="lex")


def test_constituent_unavailable_without_parse_is_none_with_reason():
    assert H.CONSTITUENT_AVAILABLE is False
    assert "parse" in H.CONSTITUENT_REASON and len(H.CONSTITUENT_REASON) > 40
    assert H.constituent("If the actor slept, the doctor ran.", "The actor slept.") is None
    f = H.features("If the actor slept, the doctor ran.", "The actor slept.", rule="words")
    assert f == {"lexical_overlap": True, "subsequence": True, "constituent": None}
    f = H.features("If the actor slept, the doctor ran.", "The actor slept.")  # paper: "slept," != "slept."
    assert f == {"lexical_overlap": False, "subsequence": False, "constituent": None}


def test_constituent_from_a_given_parse():
    parse = ("(ROOT (S (SBAR (IN If) (S (NP (DT the) (NN actor)) (VP (VBD slept)))) (, ,) "
             "(NP (DT the) (NN doctor)) (VP (VBD ran)) (. .)))")
    p = "If the actor slept, the doctor ran."
    assert H.constituent(p, "The actor slept.", parse) is True     # a complete S under SBAR
    assert H.constituent(p, "slept the doctor", parse) is False    # contiguous, but not a subtree
    assert H.subsequence(p, "slept the doctor", rule="words") is True
    assert H.features(p, "The doctor ran", parse)["constituent"] is False  # NP + VP are not one subtree


def test_constituent_bad_parse_raises():
    with pytest.raises(ValueError, match="unbalanced"):
        H.constituent("a b", "a", "(S (NP a) (VP b)")
