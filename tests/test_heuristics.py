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
def test_lexical_overlap_and_subsequence(p, h, lo, sub):
    assert H.lexical_overlap(p, h) is lo
    assert H.subsequence(p, h) is sub


def test_constituent_unavailable_without_parse_is_none_with_reason():
    assert H.CONSTITUENT_AVAILABLE is False
    assert "parse" in H.CONSTITUENT_REASON and len(H.CONSTITUENT_REASON) > 40
    assert H.constituent("If the actor slept, the doctor ran.", "The actor slept.") is None
    f = H.features("If the actor slept, the doctor ran.", "The actor slept.")
    assert f == {"lexical_overlap": True, "subsequence": True, "constituent": None}


def test_constituent_from_a_given_parse():
    parse = ("(ROOT (S (SBAR (IN If) (S (NP (DT the) (NN actor)) (VP (VBD slept)))) (, ,) "
             "(NP (DT the) (NN doctor)) (VP (VBD ran)) (. .)))")
    p = "If the actor slept, the doctor ran."
    assert H.constituent(p, "The actor slept.", parse) is True     # a complete S under SBAR
    assert H.constituent(p, "slept the doctor", parse) is False    # contiguous, but not a subtree
    assert H.subsequence(p, "slept the doctor") is True
    assert H.features(p, "The doctor ran", parse)["constituent"] is False  # NP + VP are not one subtree


def test_constituent_bad_parse_raises():
    with pytest.raises(ValueError, match="unbalanced"):
        H.constituent("a b", "a", "(S (NP a) (VP b)")
