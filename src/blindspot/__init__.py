"""blindspot: does fine-tuning on LLM-generated synthetic data reinforce a model's heuristics?

Stages (one module each): data, models, train, generate, filters, evaluate, grid, report.
Run `blindspot --help` for the command line.
"""

__version__ = "0.1.0"

# Bumped whenever a change alters what a stage writes; part of every artifact hash,
# so cached stage outputs from incompatible code are never reused.
CODE_VERSION = "1"
