"""The three HANS heuristics (McCoy et al., 2019) as features of an arbitrary (premise, hypothesis) pair.

    python -c "from blindspot.heuristics import features; print(features('The doctor saw the lawyer.', 'The lawyer saw the doctor.'))"

Tokenisation (`words`): lowercase; a word is a run of letters, digits and apostrophes;
everything else (punctuation, spaces) separates words and is dropped; apostrophes at the
edges of a run (quotation marks such as 'this') are stripped, so "doctor's" stays one word.

- lexical_overlap: every hypothesis word occurs among the premise words (a bag check,
  order and counts ignored).
- subsequence: the hypothesis words are a contiguous run of the premise words.
- constituent: the hypothesis words are exactly the leaves of one complete subtree of the
  premise's constituency parse. That needs a parse. No constituency parser can be used here
  (see CONSTITUENT_REASON), so `constituent` returns None unless the caller passes the
  premise's bracketed parse (official MNLI and HANS files carry one as `sentence1_parse`).

An empty hypothesis (no words) has none of the features. Note that for HANS rows the data
set's own `heuristic` field says which heuristic a pair was built for; these functions are
for arbitrary pairs (MNLI, synthetic data).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"(?:[^\W_]|')+")

CONSTITUENT_AVAILABLE: bool = False
CONSTITUENT_REASON: str = (
    "constituent needs a constituency parse of the premise and no constituency parser runs "
    "offline here: benepar and supar download their models from GitHub / the Hugging Face hub "
    "at run time, stanza downloads its models from the hub, and the spaCy models packaged on "
    "PyPI parse dependencies, not constituents; pass premise_parse (a bracketed parse, e.g. "
    "MNLI/HANS sentence1_parse) to compute it exactly"
)


def words(text: str) -> list[str]:
    """Lowercased words: runs of letters/digits/apostrophes, edge apostrophes and punctuation dropped."""
    out = []
    for run in _WORD.findall(text.lower()):
        w = run.strip("'")
        if w:
            out.append(w)
    return out


def lexical_overlap(premise: str, hypothesis: str) -> bool:
    """True when every hypothesis word occurs in the premise."""
    h = words(hypothesis)
    return bool(h) and set(h) <= set(words(premise))


def _is_contiguous(p: list[str], h: list[str]) -> bool:
    """True when h is a non-empty contiguous run inside p."""
    n = len(h)
    return n > 0 and any(p[i:i + n] == h for i in range(len(p) - n + 1))


def subsequence(premise: str, hypothesis: str) -> bool:
    """True when the hypothesis words are a contiguous subsequence of the premise words."""
    return _is_contiguous(words(premise), words(hypothesis))


def _subtree_leaves(parse: str) -> list[list[str]]:
    """Leaf tokens of every subtree of a bracketed (Penn-style) parse, e.g. '(S (NP (DT The) ...))'."""
    tokens = re.findall(r"\(|\)|[^\s()]+", parse)
    stack: list[list[str]] = []
    done: list[list[str]] = []
    expect_label = False
    for tok in tokens:
        if tok == "(":
            stack.append([])
            expect_label = True
        elif tok == ")":
            if not stack:
                raise ValueError(f"unbalanced parse: {parse[:80]!r}")
            leaves = stack.pop()
            done.append(leaves)
            if stack:
                stack[-1].extend(leaves)
        elif expect_label:
            expect_label = False
        elif stack:
            stack[-1].append(tok)
        else:
            raise ValueError(f"leaf outside brackets in parse: {parse[:80]!r}")
    if stack:
        raise ValueError(f"unbalanced parse: {parse[:80]!r}")
    return done


def constituent(premise: str, hypothesis: str, premise_parse: str | None = None) -> bool | None:
    """True/False when a premise parse is given (hypothesis = leaves of one subtree); None otherwise."""
    if premise_parse is None:
        return None
    h = words(hypothesis)
    if not h:
        return False
    return any(words(" ".join(leaves)) == h for leaves in _subtree_leaves(premise_parse))


def features(premise: str, hypothesis: str, premise_parse: str | None = None) -> dict[str, bool | None]:
    """All three heuristic features of one pair; constituent is None when unavailable."""
    return {
        "lexical_overlap": lexical_overlap(premise, hypothesis),
        "subsequence": subsequence(premise, hypothesis),
        "constituent": constituent(premise, hypothesis, premise_parse),
    }
