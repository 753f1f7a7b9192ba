"""blindspot: does fine-tuning on LLM-generated synthetic data reinforce a model's heuristics?

Stages (one module each): data, models, train, generate, filters, evaluate, grid, report.
Run `blindspot --help` for the command line.
"""

__version__ = "0.1.0"
# Each stage kind's code version, part of its artifact hash: blindspot.stage_versions.
