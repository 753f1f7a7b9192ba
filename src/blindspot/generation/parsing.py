"""Strict parsing of generated text into NLI pairs, exact deduplication, and leakage checks.

Generated text is only ever treated as a string: it is cut with `str.find` and a regex,
never evaluated. A generation is the text the generator wrote after its prompt (the
label-first prefix up to and including the label); a well-formed one is the template body
followed by the end marker, e.g.

    " Premise: A man sleeps. Hypothesis: A person rests. -- This is the end of the example."

Anything after the first end marker (e.g. a second example) is ignored. Everything that
does not parse is given one reason from REJECT_REASONS, so rejects can be counted and kept.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from blindspot.templates import END_MARKER, GENERATOR_BODY, GENERATOR_PREFIX

# Why a generation was not kept, in the order the checks run.
REJECT_REASONS: tuple[str, ...] = (
    "no_marker",           # the end marker never appeared (ran out of tokens or stopped early)
    "too_long",            # the text before the marker is longer than max_chars
    "label_mismatch",      # the text restates the prefix with another label
    "restated_prefix",     # the text restates the prefix with the same label (a nested example)
    "missing_premise",     # no premise field label ("Premise:")
    "missing_hypothesis",  # no hypothesis field label ("Hypothesis:")
    "repeated_field",      # a field label occurs more than once: the split would be ambiguous
    "wrong_order",         # the field labels are not in the template's order
    "extra_text",          # text before the first field label
    "empty_premise",
    "empty_hypothesis",
    "bad_characters",      # control characters or U+FFFD (a broken byte-level decode)
    "duplicate",           # the same (premise, hypothesis) pair was already kept
    "leak_pair",           # the pair occurs in an evaluation set (normalised)
    "leak_hypothesis",     # the hypothesis is an evaluation premise (normalised)
)


@dataclass(frozen=True, slots=True)
class GenerationTemplate:
    """The generator's text layout: prefix with {label}, body with {premise}/{hypothesis}, end marker."""

    prefix: str = GENERATOR_PREFIX
    body: str = GENERATOR_BODY
    end_marker: str = END_MARKER

    def prompt(self, label: str) -> str:
        """The prompt for one label: the prefix up to and including the label."""
        return self.prefix.replace("{label}", label)

    def full_text(self, label: str, premise: str, hypothesis: str) -> str:
        """One training example: prefix, body and end marker."""
        return self.prompt(label) + self.body_text(premise, hypothesis) + self.end_marker

    def body_text(self, premise: str, hypothesis: str) -> str:
        """The part after the prompt, without the end marker."""
        return self.body.replace("{premise}", premise).replace("{hypothesis}", hypothesis)


def check_template(t: GenerationTemplate) -> list[str]:
    """Problems with a template (empty list if usable); the caller raises them as ConfigError."""
    problems = []
    if t.prefix.count("{label}") != 1:
        problems.append("prefix must contain {label} exactly once")
    for field in ("{premise}", "{hypothesis}"):
        if t.body.count(field) != 1:
            problems.append(f"body must contain {field} exactly once")
    if not t.end_marker.strip():
        problems.append("end_marker must not be blank")
    if not problems and not _field_labels(t.body)[0][0].strip():
        problems.append("body must start with a field label such as ' Premise: ' before the first placeholder")
    if not problems and not _field_labels(t.body)[1][0].strip():
        problems.append("body needs a field label between its two placeholders")
    return problems


def _field_labels(body: str) -> list[tuple[str, str]]:
    """[(label text before the placeholder, field name)] in the body's order, e.g. ('Premise:', 'premise')."""
    found = sorted((body.find("{" + f + "}"), f) for f in ("premise", "hypothesis"))
    out, start = [], 0
    for pos, field in found:
        out.append((body[start:pos].strip(), field))
        start = pos + len(field) + 2
    return out


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parse: the pair if it parsed, else the reason it did not."""

    premise: str | None
    hypothesis: str | None
    reason: str | None  # None when the pair parsed

    @property
    def ok(self) -> bool:
        return self.reason is None


def _reject(reason: str) -> Parsed:
    assert reason in REJECT_REASONS, reason
    return Parsed(None, None, reason)


_BAD_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def _prefix_restatement(t: GenerationTemplate, text: str) -> str | None:
    """The label of a restated prefix inside `text`, or None if the prefix is not restated."""
    head, _, tail = t.prefix.partition("{label}")
    if not head.strip():
        return None
    pattern = re.escape(head.strip()) + r"\s*(\S+?)\s*" + re.escape(tail.strip())
    m = re.search(pattern, text) if tail.strip() else re.search(re.escape(head.strip()) + r"\s*(\S+)", text)
    return m.group(1).strip(".,;:!?\"'") if m else None


def parse_generation(text: str, label: str, template: GenerationTemplate = GenerationTemplate(),
                     max_chars: int = 2000) -> Parsed:
    """Parse one generation (the text after the prompt) conditioned on `label`."""
    cut = text.find(template.end_marker.strip())
    if cut < 0:
        return _reject("no_marker")
    body = text[:cut]
    if len(body) > max_chars:
        return _reject("too_long")
    restated = _prefix_restatement(template, body)
    if restated is not None:
        return _reject("restated_prefix" if restated == label else "label_mismatch")
    (first_label, first_field), (second_label, second_field) = _field_labels(template.body)
    counts = {first_field: body.count(first_label), second_field: body.count(second_label)}
    for field in ("premise", "hypothesis"):
        if counts[field] == 0:
            return _reject(f"missing_{field}")
    if counts[first_field] > 1 or counts[second_field] > 1:
        return _reject("repeated_field")
    i, j = body.find(first_label), body.find(second_label)
    if j < i:
        return _reject("wrong_order")
    if body[:i].strip():
        return _reject("extra_text")
    values = {first_field: body[i + len(first_label):j].strip(),
              second_field: body[j + len(second_label):].strip()}
    for field in ("premise", "hypothesis"):
        if not values[field]:
            return _reject(f"empty_{field}")
        if _BAD_CHAR.search(values[field]):
            return _reject("bad_characters")
    return Parsed(values["premise"], values["hypothesis"], None)


def doomed_reason(text: str, label: str, template: GenerationTemplate = GenerationTemplate(),
                  max_chars: int = 2000) -> str | None:
    """The reject reason of an unfinished generation (no marker yet) that no continuation can save.

    Used to stop sampling a row early: text that is already too long, restates the prefix or
    repeats a field label is rejected whatever comes next.
    """
    if len(text) > max_chars + len(template.end_marker):
        return "too_long"
    restated = _prefix_restatement(template, text)
    if restated is not None:
        return "restated_prefix" if restated == label else "label_mismatch"
    if any(text.count(field_label) > 1 for field_label, _ in _field_labels(template.body)):
        return "repeated_field"
    return None


def normalise(text: str) -> str:
    """Leakage-check form of a sentence: NFKC, whitespace runs collapsed to one space, casefolded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


@dataclass(slots=True)
class LeakageIndex:
    """Normalised evaluation pairs and premises, to spot synthetic pairs copied from evaluation sets."""

    pairs: set[tuple[str, str]]
    premises: set[str]

    @classmethod
    def from_pairs(cls, pairs) -> "LeakageIndex":
        """Build from (premise, hypothesis) pairs of every evaluation set."""
        norm = [(normalise(p), normalise(h)) for p, h in pairs]
        return cls(pairs=set(norm), premises={p for p, _ in norm})

    def check(self, premise: str, hypothesis: str) -> str | None:
        """'leak_pair', 'leak_hypothesis' or None."""
        p, h = normalise(premise), normalise(hypothesis)
        if (p, h) in self.pairs:
            return "leak_pair"
        if h in self.premises:
            return "leak_hypothesis"
        return None


@dataclass(slots=True)
class PairFilter:
    """Exact-duplicate and leakage filter over kept pairs, in the order they are offered."""

    leakage: LeakageIndex | None = None
    keep_leaked: bool = False
    seen: set[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        if self.seen is None:
            self.seen = set()

    def offer(self, premise: str, hypothesis: str) -> tuple[str | None, str | None]:
        """(reason to drop or None, leak reason or None); remembers kept pairs for dedup."""
        key = (premise, hypothesis)
        if key in self.seen:
            return "duplicate", None
        leak = self.leakage.check(premise, hypothesis) if self.leakage else None
        if leak and not self.keep_leaked:
            return leak, leak
        self.seen.add(key)
        return None, leak
