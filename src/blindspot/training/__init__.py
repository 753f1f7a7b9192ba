"""Training: LoRA adapters and the one training loop, and what trains on it.

    loop.py         LoRA adapters, the optimiser and schedule, `fit` (the generic loop, checkpointed)
    classifier.py   the NLI classifier: train (or continue) it, load it; `blindspot train-classifier`
    generator.py    the label-first generator: train it, reload it; `blindspot train-generator`
    grouped.py      K LoRA adapters on one frozen base, trained in one loop (a group of runs)
    group_runs.py   the grid's augmentations of one starting point as one such group
    resume.py       mid-stage checkpoints: save, find, load, remove
"""
