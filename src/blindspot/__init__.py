"""blindspot: does fine-tuning on LLM-generated synthetic data reinforce a model's heuristics?

Layout: `stages/` (one module per stage kind: its typed Spec and `run`), `grid/` (the planner, the
store and the executors that run the stages), `training/` (the training loop, the classifier and
the generator), `generation/` (sampling and decoding), `models/` (resolution, loading, checkpoint
I/O), `data/` (loaders and cleaning); heuristics, filters, evaluate, results and report at the top.
Run `blindspot --help` for the command line; README "Repository layout" says where each file is.
"""

__version__ = "0.1.0"
# Each stage kind's code version, part of its artifact hash: blindspot.grid.stage_versions.
