"""Prompt templates: the classifier's input text and the generator's label-first example."""

from __future__ import annotations

from typing import Literal

# The paper's instruction prompt for the classifier (Zhang & Pavlick 2025, appendix).
PAPER_CLASSIFIER_TEMPLATE = (
    "Please indicate the relationship between the premise and the hypothesis with entailment, "
    "neutral or contradiction. Premise: {premise} Hypothesis: {hypothesis} "
    "The relationship between premise and hypothesis is"
)
# A short template: ~3x fewer tokens per example, for CPU runs.
SHORT_CLASSIFIER_TEMPLATE = "Premise: {premise}\nHypothesis: {hypothesis}\nRelationship:"

CLASSIFIER_TEMPLATES: dict[str, str] = {
    "paper": PAPER_CLASSIFIER_TEMPLATE,
    "short": SHORT_CLASSIFIER_TEMPLATE,
}
ClassifierTemplateName = Literal["paper", "short"]

# The generator's training text, label first so that sampling can be conditioned on it.
GENERATOR_PREFIX = "This is an example where the relationship between the premise and the hypothesis is {label}."
GENERATOR_BODY = " Premise: {premise} Hypothesis: {hypothesis}"
END_MARKER = " -- This is the end of the example."


def classifier_text(template: str, premise: str, hypothesis: str) -> str:
    """Fill a classifier template; `template` is a name from CLASSIFIER_TEMPLATES or a format string."""
    fmt = CLASSIFIER_TEMPLATES.get(template, template)
    return fmt.replace("{premise}", premise).replace("{hypothesis}", hypothesis)


def split_template(template: str) -> tuple[str, str]:
    """Split a classifier template into the text every example shares and the per-example rest.

    The shared prefix is everything before the first `{premise}`/`{hypothesis}` placeholder,
    trimmed back to its last space so the cut falls on a word boundary.
    """
    fmt = CLASSIFIER_TEMPLATES.get(template, template)
    cut = min(i for i in (fmt.find("{premise}"), fmt.find("{hypothesis}"), len(fmt)) if i >= 0)
    space = fmt.rfind(" ", 0, cut)
    cut = space if space > 0 else 0
    return fmt[:cut], fmt[cut:]


def encode_classifier_inputs(tokenizer, template: str, pairs: list[tuple[str, str]],
                             max_length: int = 512) -> tuple[list[int], list[list[int]]]:
    """Token ids of the shared prefix (with BOS) and of each pair's suffix (no special tokens).

    An example's input is always `prefix + suffix`, in training and in evaluation alike, so the
    prefix's key/value cache can be computed once and reused for every example exactly.
    Suffixes are truncated from the left of the premise side only if prefix + suffix exceeds
    `max_length` (the tail holds the hypothesis and the question, which must survive).
    """
    prefix, rest = split_template(template)
    prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"] if prefix else (
        [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [])
    texts = [rest.replace("{premise}", p).replace("{hypothesis}", h) for p, h in pairs]
    suffixes = tokenizer(texts, add_special_tokens=False)["input_ids"]
    budget = max(1, max_length - len(prefix_ids))
    suffixes = [s if len(s) <= budget else s[-budget:] for s in suffixes]
    return list(prefix_ids), suffixes
