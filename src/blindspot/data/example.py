"""The one in-memory representation of an NLI pair and of a loaded set."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Label spaces. The classifier is always 3-way (MNLI's); a 2-way challenge set (HANS) is
# scored by folding neutral and contradiction into non-entailment.
MNLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
HANS_LABELS: tuple[str, ...] = ("entailment", "non-entailment")
NON_ENTAILMENT = "non-entailment"


def to_two_way(label: str) -> str:
    """entailment stays; neutral / contradiction / non-entailment become non-entailment."""
    return "entailment" if label == "entailment" else NON_ENTAILMENT


@dataclass(frozen=True, slots=True)
class NLIExample:
    id: str
    premise: str
    hypothesis: str
    label: str
    genre: str | None = None
    heuristic: str | None = None
    subcase: str | None = None
    template: str | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "premise": self.premise, "hypothesis": self.hypothesis, "label": self.label}
        for k in ("genre", "heuristic", "subcase", "template"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NLIExample":
        return cls(**{k: d.get(k) for k in ("id", "premise", "hypothesis", "label", "genre",
                                             "heuristic", "subcase", "template")})


@dataclass(slots=True)
class NLISet:
    """A loaded split: its name, its label space, its examples, and where it came from."""

    name: str
    labels: tuple[str, ...]
    examples: list[NLIExample]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self):
        return iter(self.examples)

    def label_counts(self) -> dict[str, int]:
        c = Counter(e.label for e in self.examples)
        return {lab: c.get(lab, 0) for lab in self.labels}


def save_examples(path, examples) -> None:
    """Write examples as the canonical internal JSONL (one `to_dict()` per line), atomically."""
    from blindspot.storage import atomic_write_jsonl

    atomic_write_jsonl(path, (e.to_dict() for e in examples))


def load_examples(path, labels: tuple[str, ...] | None = None) -> list[NLIExample]:
    """Read the canonical internal JSONL; unknown keys are ignored, bad lines name file:line."""
    import json
    from pathlib import Path

    from blindspot.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected an examples JSONL)")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            missing = [k for k in ("id", "premise", "hypothesis", "label") if not isinstance(d.get(k), str)]
            if missing:
                raise DataError(f"{path}:{lineno}: missing or non-string field(s) {', '.join(missing)}")
            if labels is not None and d["label"] not in labels:
                raise DataError(f"{path}:{lineno}: unknown label {d['label']!r} (expected one of {', '.join(labels)})")
            out.append(NLIExample.from_dict(d))
    return out
