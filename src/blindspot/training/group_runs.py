"""A starting point's augmentation stages as one job: K classifiers continued together (blindspot.training.grouped).

    blindspot run configs/demo.yaml                                   # grouped (classifier.group_augmentations)
    blindspot run configs/demo.yaml --set classifier.group_augmentations=false   # one by one

`train_classifiers_together` is `train.train_classifier` for K specs that continue the same saved
classifier: it writes the same directories (adapter, tokenizer, classifier.json, train_log.jsonl,
meta.json, and DONE unless the caller owns it), with a mid-training checkpoint per run in its own
directory (the same files a run alone writes, so either resumes the other's), and a group of one,
or a run already done, takes the plain path. The planner side: `group_plan` names one group per
starting point (grid.build_plan) and `schedule` orders a stage list so that a group is one item,
placed once all its members' inputs have run. The executors run such an item as one job (a Ray
task) through `store.run_group`, which holds every member's lock and writes each member's
stage.json, status log, timing.json and DONE, as for a stage alone. A stage's hash never depends
on whether it was grouped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from blindspot.grid.artifacts import StageSpec
from blindspot.data.example import NLIExample
from blindspot.errors import ConfigError
from blindspot.storage import is_done, mark_done

log = logging.getLogger(__name__)

SHARED_FIELDS = ("init_from", "device", "dtype", "quantize", "seed")  # what the K runs of a group must share


# --- training -----------------------------------------------------------------------------------

def train_classifiers_together(specs: list, examples: list[list[NLIExample]], out_dirs: list[Path],
                               cache_dir: str | Path | None = None, write_done: bool = True) -> list[Path]:
    """Continue one saved classifier K times (spec k on examples[k] into out_dirs[k]) as one job.

    `write_done` False leaves DONE to the caller (the grid's store writes it last, once).
    """
    from blindspot.training import classifier as train
    from blindspot.training.grouped import AdapterGroup, UngroupableModel
    from blindspot.mfu import mfu_record, training_mfu, TRAIN_FORMULA
    from blindspot.models.checkpoints import save_adapter_dir
    from blindspot.models.resolve import detect_device
    from blindspot.runmeta import run_metadata

    out_dirs = [Path(d) for d in out_dirs]
    todo = []
    for k, (spec, out) in enumerate(zip(specs, out_dirs)):
        if is_done(out):
            train.train_classifier(spec, examples[k], out, cache_dir)  # checks it is the same; does nothing
        else:
            todo.append(k)
    if len(todo) <= 1 or any(not examples[k] for k in todo):
        for k in todo:
            train.train_classifier(specs[k], examples[k], out_dirs[k], cache_dir, write_done)
        return out_dirs
    first = specs[todo[0]]
    for k in todo:
        differ = [f for f in SHARED_FIELDS if getattr(specs[k], f) != getattr(first, f)]
        if differ or not first.init_from:
            raise ValueError(f"train_classifiers_together: runs differ in {differ or ['init_from (none)']}")
    t0 = time.time()
    device, dtype = detect_device(first.device, first.dtype)
    torch.manual_seed(first.seed)  # as train_classifier: the dropout streams start where a single run's do
    clf = train._load(Path(first.init_from), device, dtype, first.quantize, trainable=True)
    for k in todo:
        if specs[k].template is not None and train._format(specs[k].template) != clf.template:
            raise ConfigError(f"template: {specs[k].template!r} differs from init_from's template {clf.template!r}")
        if tuple(clf.labels) != specs[k].labels:
            raise ConfigError(f"labels: {specs[k].labels} differ from init_from's labels {clf.labels}")
    batches = [train.classifier_batches(clf.tokenizer, clf.template, examples[k], specs[k].labels,
                                        specs[k].optim.batch_size, specs[k].max_length, specs[k].seed,
                                        specs[k].optim.group_by_length) for k in todo]
    try:
        group = AdapterGroup(clf.model, len(todo), device, clf.tokenizer.pad_token_id)
    except UngroupableModel as e:
        log.warning("%s; training the %d runs one by one", e, len(todo))
        del clf
        for k in todo:
            train.train_classifier(specs[k], examples[k], out_dirs[k], cache_dir, write_done)
        return out_dirs
    load_s = time.time() - t0
    t_fit = time.time()
    try:
        results = group.fit(batches, [specs[k].optim for k in todo], desc=f"train {len(todo)} together",
                            checkpoint_dirs=[out_dirs[k] for k in todo])
    finally:
        group.close()
    fit_s = time.time() - t_fit
    blocks = [training_mfu(clf.model, b, specs[k].optim.epochs, r.seconds, device, dtype, cache_dir)
              for k, b, r in zip(todo, batches, results)]
    group_info = {"size": len(todo), "members": [out_dirs[k].name for k in todo], "load_s": round(load_s, 3),
                  "train_seconds": round(fit_s, 3),
                  "mfu": mfu_record(sum(b["model_flops"] for b in blocks), fit_s, sum(b["tokens"] for b in blocks),
                                    TRAIN_FORMULA, device, dtype, cache_dir)}
    for j, (k, result, mfu) in enumerate(zip(todo, results, blocks)):
        group.export(j)
        spec, ex = specs[k], examples[k]
        info = {"spec": spec.model_dump(mode="json"), "labels": list(spec.labels), "template": clf.template,
                "base": clf.spec["base"], "lora": clf.spec["lora"], "max_length": spec.max_length,
                "train": {"examples": len(ex), "steps": result.steps,
                          "label_counts": {lab: sum(e.label == lab for e in ex) for lab in spec.labels}}}
        wall = load_s / len(todo) + result.seconds  # its share of loading and training (alone: load + train)
        meta = run_metadata(device=str(device), dtype=str(dtype).removeprefix("torch."), wall_s=wall,
                            train_seconds=result.seconds, train_examples_per_s=result.examples_per_s, mfu=mfu,
                            group=group_info)
        save_adapter_dir(clf.model, clf.tokenizer, out_dirs[k], "classifier.json", info, result.log, meta)
        if write_done:  # standalone; in a grid the store writes DONE last
            mark_done(out_dirs[k])
    log.info("trained %d classifiers together in %.1f s (load %.1f s, MFU %s)", len(todo), time.time() - t0, load_s,
             group_info["mfu"]["mfu"])
    return out_dirs


# --- the grid -----------------------------------------------------------------------------------

def group_plan(stages: list[StageSpec], enabled: bool) -> list[list[StageSpec]]:
    """The augmentation stages of each starting point (two or more), if grouping is `enabled`."""
    if not enabled:
        return []
    by_start: dict[str, list[StageSpec]] = {}
    for st in stages:
        if st.stage == "augment":
            by_start.setdefault(st.inputs["start"].dirname, []).append(st)
    return [g for g in by_start.values() if len(g) > 1]


Item = StageSpec | list[StageSpec]


def schedule(todo: list[StageSpec], groups: list[list[StageSpec]]) -> list[Item]:
    """`todo` (inputs first) with each group's stages still to run as one item, placed where all its
    members' inputs have run, and every stage that reads a member after it; otherwise in todo order."""
    left = {s.dirname for s in todo}
    items: list[Item] = []
    item_of: dict[str, int] = {}
    for g in groups:
        members = [s for s in g if s.dirname in left]
        if len(members) > 1:
            for s in members:
                item_of[s.dirname] = -1 - len(items)  # placeholder until items are numbered below
            items.append(members)
    grouped_items, items = items, []
    for s in todo:
        slot = item_of.get(s.dirname)
        if slot is None:
            item_of[s.dirname] = len(items)
            items.append(s)
        elif slot < 0:
            group = grouped_items[-1 - slot]
            for m in group:
                item_of[m.dirname] = len(items)
            items.append(group)
    deps = [{item_of[d.dirname] for m in (it if isinstance(it, list) else [it]) for d in m.inputs.values()
             if d.dirname in item_of} - {i} for i, it in enumerate(items)]
    order, emitted = [], set()
    while len(order) < len(items):  # stable: the earliest item whose inputs have all run
        i = next(i for i in range(len(items)) if i not in emitted and deps[i] <= emitted)
        emitted.add(i)
        order.append(items[i])
    return order
