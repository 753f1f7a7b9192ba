"""The three HANS heuristics (McCoy et al., 2019) as features of an arbitrary (premise, hypothesis) pair.

    python -c "from blindspot.heuristics import features; print(features('The doctor saw the lawyer.', 'The lawyer saw the doctor.'))"

Two tokenisation rules, chosen by name (`OVERLAP_RULES`; a config's `overlap_rule`):

- `paper` (the default): the reference implementation's adaptation of HANS's `lex_finder`
  (McCoy et al.): split on whitespace, drop tokens that are exactly ".", "?" or "!",
  lowercase. Punctuation attached to a word stays part of it, so "left." is not "left".
- `words`: lowercase; a word is a run of letters, digits and apostrophes; everything else
  (punctuation, spaces) separates words and is dropped; apostrophes at the edges of a run
  (quotation marks such as 'this') are stripped, so "doctor's" stays one word.

- lexical_overlap: every hypothesis token occurs among the premise tokens (a bag check,
  order and counts ignored).
- subsequence: the hypothesis tokens are a contiguous run of the premise tokens (same rule,
  so a subsequence pair always has full lexical overlap; HANS's own `subseq_finder` tests a
  character substring of the joined tokens instead, which also matches inside words).
- constituent: the hypothesis words are exactly the leaves of one complete subtree of the
  premise's constituency parse. Parse leaves are treebank tokens ("doctor", "."), so this one
  always compares `words`, whatever the rule. It needs a parse; no constituency parser can be
  used here (see CONSTITUENT_REASON), so `constituent` returns None unless the caller passes
  the premise's bracketed parse (official MNLI and HANS files carry one as `sentence1_parse`).

Empty hypothesis (no tokens left): under `paper` it has full lexical overlap and is a
subsequence, exactly as in the reference (its loop over hypothesis words never sets
`all_in = False`); under `words` it has none of the features. Note that for HANS rows the
data set's own `heuristic` field says which heuristic a pair was built for; these functions
are for arbitrary pairs (MNLI, synthetic data).
"""

from __future__ import annotations

import re
from typing import Literal

from blindspot.errors import ConfigError

OverlapRule = Literal["paper", "words"]
OVERLAP_RULES: tuple[str, ...] = ("paper", "words")
DEFAULT_OVERLAP_RULE: OverlapRule = "paper"
RULE_TEXT = {
    "paper": "paper: whitespace tokens, '.', '?', '!' tokens dropped, lowercased (the reference's lex_finder); "
             "an empty hypothesis counts as overlap",
    "words": "words: lowercased runs of letters, digits and apostrophes, all punctuation dropped; "
             "an empty hypothesis has no overlap",
}
_PAPER_DROPPED = frozenset({".", "?", "!"})
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


def paper_tokens(text: str) -> list[str]:
    """The reference's tokens: whitespace split, tokens exactly '.', '?' or '!' dropped, lowercased."""
    return [t.lower() for t in text.split() if t not in _PAPER_DROPPED]


def check_rule(rule: str) -> OverlapRule:
    """The rule itself, or a ConfigError naming the known rules."""
    if rule not in OVERLAP_RULES:
        raise ConfigError(f"overlap_rule: {rule!r} is not one of {', '.join(OVERLAP_RULES)}")
    return rule  # type: ignore[return-value]


def tokens(text: str, rule: OverlapRule = DEFAULT_OVERLAP_RULE) -> list[str]:
    """The tokens the heuristics compare under `rule`."""
    return paper_tokens(text) if check_rule(rule) == "paper" else words(text)


def lexical_overlap(premise: str, hypothesis: str, rule: OverlapRule = DEFAULT_OVERLAP_RULE) -> bool:
    """True when every hypothesis token occurs among the premise tokens (empty: see module doc)."""
    h = tokens(hypothesis, rule)
    if not h:
        return rule == "paper"
    return set(h) <= set(tokens(premise, rule))


def _is_contiguous(p: list[str], h: list[str]) -> bool:
    """True when h is a non-empty contiguous run inside p."""
    n = len(h)
    return n > 0 and any(p[i:i + n] == h for i in range(len(p) - n + 1))


def subsequence(premise: str, hypothesis: str, rule: OverlapRule = DEFAULT_OVERLAP_RULE) -> bool:
    """True when the hypothesis tokens are a contiguous run of the premise tokens (empty: see module doc)."""
    h = tokens(hypothesis, rule)
    if not h:
        return rule == "paper"
    return _is_contiguous(tokens(premise, rule), h)


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


def features(premise: str, hypothesis: str, premise_parse: str | None = None,
             rule: OverlapRule = DEFAULT_OVERLAP_RULE) -> dict[str, bool | None]:
    """All three heuristic features of one pair under `rule`; constituent is None when unavailable."""
    return {
        "lexical_overlap": lexical_overlap(premise, hypothesis, rule),
        "subsequence": subsequence(premise, hypothesis, rule),
        "constituent": constituent(premise, hypothesis, premise_parse),
    }
