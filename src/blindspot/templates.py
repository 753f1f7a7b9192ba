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
