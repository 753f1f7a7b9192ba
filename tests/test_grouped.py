"""Grouped training (blindspot.training.grouped): K adapters trained together == K separate runs.

Tolerance (float32 on CPU): weights and logits agree to rtol 1e-4 / atol 1e-6. What differs is only
rounding: rows are padded to the group's widest micro-batch and the LoRA products are batched
matmuls. Each check also asserts that the runs moved away from the start and from each other by far
more than the tolerance, so agreement is not trivial.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.training.group_runs import train_classifiers_together
from blindspot.training.loop import LoraSpec, OptimSpec
from blindspot.models.resolve import build_tiny_llama
from blindspot.training.classifier import ClassifierSpec, load_classifier, train_classifier

RTOL, ATOL = 1e-4, 1e-6
SUBJECTS = ["The doctor", "A lawyer", "The cat", "Some students", "The artist", "A banker"]
EXAMPLES = [NLIExample(f"ex{i}", f"{SUBJECTS[i % 6]} saw the {['actor', 'judge', 'dog'][i % 3]} near the "
                       f"{['park', 'old station by the river', 'bank'][i % 4 % 3]}.",
                       f"{SUBJECTS[(i + i // 3) % 6]} saw {['someone', 'nobody', 'the judge'][i % 3]}.",
                       MNLI_LABELS[i % 3]) for i in range(36)]


def _by_label(label: str, n: int) -> list[NLIExample]:
    return [e for e in EXAMPLES if e.label == label][:n]


# Different lengths (9, 16, 24 examples; a short last batch), label mixes, batch sizes, accumulation,
# and clipping that fires on every step (max_grad_norm 1e-3), on some, or never (1e3).
RUNS = [
    (_by_label("entailment", 6) + _by_label("neutral", 3), OptimSpec(batch_size=4, lr=5e-3, warmup_ratio=0.2,
                                                                       max_grad_norm=1e-3, log_every=1)),
    (EXAMPLES[:16], OptimSpec(batch_size=3, lr=3e-3, warmup_ratio=0.5, max_grad_norm=0.3, log_every=2)),
    (_by_label("contradiction", 12) + EXAMPLES[12:24], OptimSpec(batch_size=4, lr=2e-3, grad_accum=2,
                                                                  max_grad_norm=1e3, log_every=1)),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny", [f"{e.premise} {e.hypothesis}" for e in EXAMPLES])


def _start(base, root, dropout: float, quantize: str = "none"):
    spec = ClassifierSpec(model=str(base), lora=LoraSpec(r=4, dropout=dropout), template="short", device="cpu",
                          dtype="float32", quantize=quantize, optim=OptimSpec(batch_size=4, lr=2e-3))
    return train_classifier(spec, EXAMPLES[:12], root / f"start-{dropout}-{quantize}")


def _specs(start, quantize="none"):
    return [ClassifierSpec(init_from=str(start), template=None, device="cpu", dtype="float32", quantize=quantize,
                           optim=optim, seed=7) for _, optim in RUNS]


def _logits(path, examples=EXAMPLES[24:30]) -> torch.Tensor:
    clf = load_classifier(path, device="cpu", dtype="float32")
    from blindspot.templates import encode_classifier_inputs

    prefix, suffixes = encode_classifier_inputs(clf.tokenizer, clf.template, [(e.premise, e.hypothesis) for e in examples])
    with torch.inference_mode():
        return torch.cat([clf.model(input_ids=torch.tensor([prefix + s])).logits for s in suffixes])


def _train_both(base, tmp_path, dropout: float, quantize: str = "none"):
    start = _start(base, tmp_path, dropout, quantize)
    specs, examples = _specs(start, quantize), [ex for ex, _ in RUNS]
    alone = [train_classifier(s, ex, tmp_path / f"alone{k}") for k, (s, ex) in enumerate(zip(specs, examples))]
    together = train_classifiers_together(specs, examples, [tmp_path / f"group{k}" for k in range(len(specs))])
    return start, alone, together


def _max_diff(dirs_a, dirs_b) -> float:
    """Largest absolute difference between the adapters (LoRA and head) of paired run directories."""
    out = 0.0
    for a, b in zip(dirs_a, dirs_b):
        wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
        out = max(out, *(float((wa[k] - wb[k]).abs().max()) for k in wa))
    return out


def _assert_same_runs(start, alone, together, rtol=RTOL, atol=ATOL, logit_atol=1e-5):
    first = load_file(start / "adapter_model.safetensors")
    for a, g in zip(alone, together):
        wa, wg = load_file(a / "adapter_model.safetensors"), load_file(g / "adapter_model.safetensors")
        assert wa.keys() == wg.keys() == first.keys()
        for key in wa:
            torch.testing.assert_close(wg[key], wa[key], rtol=rtol, atol=atol, msg=lambda m: f"{g.name} {key}: {m}")
        moved = max(float((wa[k] - first[k]).abs().max()) for k in wa)
        assert moved > 1000 * atol  # training changed the adapter: the comparison is not trivial
        torch.testing.assert_close(_logits(g), _logits(a), rtol=rtol, atol=logit_atol)
        ia, ig = json.loads((a / "classifier.json").read_text()), json.loads((g / "classifier.json").read_text())
        assert ia == ig
        la = [json.loads(x) for x in (a / "train_log.jsonl").read_text().splitlines()]
        lg = [json.loads(x) for x in (g / "train_log.jsonl").read_text().splitlines()]
        assert [(r["step"], r["epoch"], r["examples"]) for r in la] == [(r["step"], r["epoch"], r["examples"]) for r in lg]
        assert [r["lr"] for r in la] == pytest.approx([r["lr"] for r in lg], rel=1e-12)
        assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lg], rel=1e-4)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in g.iterdir())
    wa = [load_file(a / "adapter_model.safetensors") for a in alone]
    key = next(k for k in wa[0] if "lora_B" in k)
    assert all(float((wa[i][key] - wa[j][key]).abs().max()) > 1000 * atol for i in range(3) for j in range(i))


def test_group_equals_separate_runs(base, tmp_path):
    start, alone, together = _train_both(base, tmp_path, dropout=0.0)
    _assert_same_runs(start, alone, together)
    meta = json.loads((together[0] / "meta.json").read_text())
    assert meta["group"]["size"] == 3 and meta["group"]["members"] == [g.name for g in together]
    assert meta["mfu"]["model_flops"] > 0 and meta["group"]["mfu"]["model_flops"] == sum(
        json.loads((g / "meta.json").read_text())["mfu"]["model_flops"] for g in together)
    assert meta["train_seconds"] > 0


def test_group_with_dropout_draws_each_runs_own_masks(base, tmp_path):
    """LoRA dropout 0.3: each run's masks come from its own copy of the RNG stream, as alone."""
    start, alone, together = _train_both(base, tmp_path, dropout=0.3)
    _assert_same_runs(start, alone, together)


def test_group_of_one_and_done_runs_take_the_plain_path(base, tmp_path, monkeypatch):
    import blindspot.training.grouped as grouped

    start = _start(base, tmp_path, 0.0)
    specs = _specs(start)
    done = train_classifier(specs[0], RUNS[0][0], tmp_path / "g0")
    monkeypatch.setattr(grouped.AdapterGroup, "__init__", lambda *a, **k: pytest.fail("grouped a run of one"))
    before = (done / "DONE").stat().st_mtime_ns
    out = train_classifiers_together(specs[:2], [RUNS[0][0], RUNS[1][0]], [tmp_path / "g0", tmp_path / "g1"])
    assert (done / "DONE").stat().st_mtime_ns == before and (out[1] / "DONE").exists()
    assert "group" not in json.loads((out[1] / "meta.json").read_text())


def _four_bit_here() -> bool:
    from blindspot.models.load import four_bit_available

    return four_bit_available(torch.device("cpu"))[0]


@pytest.mark.skipif(not _four_bit_here(), reason="bitsandbytes with a CPU backend (>= 0.46) is not installed")
def test_group_on_4bit_base_with_dropout_and_checkpointing(base, tmp_path, monkeypatch):
    """QLoRA (NF4 base, gradient checkpointing, bf16 autocast) with dropout: the backward pass runs each
    layer again, and each run must redraw its first pass's masks. Under bf16 autocast rounding is
    larger, so the check is relative: grouped vs alone differ far less than a group whose recomputed
    layers draw fresh masks (the bug the snapshots prevent) differs from alone."""
    import blindspot.training.grouped as grouped

    start, alone, together = _train_both(base, tmp_path, dropout=0.3, quantize="4bit")
    same = _max_diff(alone, together)
    monkeypatch.setattr(grouped.AdapterRNG, "begin", lambda self, key: None)  # no snapshots: fresh masks
    broken = train_classifiers_together(_specs(start, "4bit"), [ex for ex, _ in RUNS],
                                        [tmp_path / f"broken{k}" for k in range(len(RUNS))])
    assert same < 0.1 * _max_diff(alone, broken), (same, _max_diff(alone, broken))
    for a, g in zip(alone, together):
        torch.testing.assert_close(_logits(g), _logits(a), rtol=2e-2, atol=2e-2)


class _Stop(Exception):
    pass


def test_a_group_stopped_mid_training_resumes_each_member_from_its_checkpoint(base, tmp_path, monkeypatch, caplog):
    """checkpoint_every 2, dropout on: the group stops at its 10th optimiser step (as a kill would: the
    members' checkpoints are left); the rerun resumes each member from its own checkpoint (runs of 3,
    6 and 3 steps, stopped at steps 3, 5 and 2) and ends with the weights of separate runs."""
    import logging

    import blindspot.training.grouped as grouped

    start = _start(base, tmp_path, 0.3)
    specs = [s.model_copy(update={"optim": s.optim.model_copy(update={"checkpoint_every": 2})}) for s in _specs(start)]
    examples = [ex for ex, _ in RUNS]
    alone = [train_classifier(s, ex, tmp_path / f"alone{k}") for k, (s, ex) in enumerate(zip(specs, examples))]
    outs = [tmp_path / f"group{k}" for k in range(len(specs))]
    real, calls = grouped.AdapterGroup._optimizer_step, []

    def stop_at_ten(self, *args):
        real(self, *args)
        calls.append(args[0])
        if len(calls) == 10:
            raise _Stop

    monkeypatch.setattr(grouped.AdapterGroup, "_optimizer_step", stop_at_ten)
    with pytest.raises(_Stop):
        train_classifiers_together(specs, examples, outs)
    monkeypatch.undo()
    assert [sorted(p.name for p in (o / "checkpoints").iterdir()) for o in outs] == [["step-2"], ["step-4"], ["step-2"]]
    with caplog.at_level(logging.INFO, logger="blindspot.training.grouped"):
        together = train_classifiers_together(specs, examples, outs)
    assert sum("resuming from checkpoint" in r.getMessage() for r in caplog.records) == 3
    _assert_same_runs(start, alone, together)
    assert not any((o / "checkpoints").exists() for o in outs)


def test_schedule_runs_a_group_once_every_members_inputs_ran():
    from blindspot.grid.artifacts import StageSpec, topological_order
    from blindspot.training.group_runs import group_plan, schedule

    prepare = StageSpec("prepare", {"x": 1})
    start = StageSpec("start", {"n": 1}, {"prepare": prepare})
    generate = StageSpec("generate", {}, {"prepare": prepare})
    aug_o = StageSpec("augment", {"source": "original"}, {"start": start, "data": prepare})
    aug_s = StageSpec("augment", {"source": "synthetic"}, {"start": start, "data": generate})
    ev_o, ev_s = (StageSpec("evaluate", {}, {"classifier": a, "prepare": prepare}) for a in (aug_o, aug_s))
    stages = topological_order([ev_o, ev_s])
    assert [s.stage for s in stages] == ["prepare", "start", "augment", "evaluate", "generate", "augment", "evaluate"]
    groups = group_plan(stages, enabled=True)
    assert groups == [[aug_o, aug_s]] and group_plan(stages, enabled=False) == []
    order = schedule(stages, groups)
    assert order == [prepare, start, generate, [aug_o, aug_s], ev_o, ev_s]
    assert schedule(stages[:5] + stages[6:], groups) == [prepare, start, aug_o, ev_o, generate, ev_s]  # aug_s done
    assert schedule(stages, []) == stages
