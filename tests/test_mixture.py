"""Mixtures (augment.synthetic_fraction): exact sizes and label balance, the planner's stages, and the
stages of a config without the new axes, pinned (today's hashes).

The plans here are built on small fixture files the tests write (`fixture_data`), addressed through
$BLINDSPOT_FIXTURE_DATA so that the prepare stage's spec (which holds the path as written) is the
same on every machine.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from blindspot.config import parse_config
from blindspot.data.cleaning import sample_balanced
from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.errors import ConfigError
from blindspot.mixture import (augment_conditions, mixture_counts, mixture_name, parse_mixture, sample_mixture,
                               synthetic_fraction)

HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
PEOPLE = ("the doctor", "a lawyer", "the artist", "my friend", "the student", "a tourist")
VERBS = ("saw", "helped", "called", "thanked", "paid", "met")


def fixture_data(root: Path) -> Path:
    """A 30-pair MNLI-format train file, 9 dev pairs and 12 HANS-format pairs (2 per heuristic x label)."""
    root.mkdir(parents=True, exist_ok=True)

    def mnli(n: int, tag: str) -> list[dict]:
        rows = []
        for i in range(n):
            a, b, v = PEOPLE[i % 6], PEOPLE[(i + 1 + i // 6) % 6], VERBS[(5 * i) % 6]
            label = MNLI_LABELS[i % 3]
            hyp = {"entailment": f"{a} {v} someone.", "neutral": f"{a} {v} {b} twice.",
                   "contradiction": f"nobody {v} {b}."}[label]
            rows.append({"pairID": f"{tag}{i}", "genre": "fiction", "gold_label": label,
                         "sentence1": f"{a.capitalize()} {v} {b} at {i} o'clock.", "sentence2": hyp.capitalize()})
        return rows

    hans = [{"pairID": f"ex{h}{lab}{k}", "gold_label": lab, "heuristic": heur, "subcase": f"{heur}_{lab}",
             "template": "temp1", "sentence1": f"The doctor {VERBS[k]} the lawyer {h}.",
             "sentence2": "The doctor saw the lawyer." if lab == "entailment" else "The lawyer saw the doctor."}
            for h, heur in enumerate(HEURISTICS) for lab in ("entailment", "non-entailment") for k in range(2)]
    for name, rows in (("multinli_1.0_train.jsonl", mnli(30, "t")), ("multinli_1.0_dev_matched.jsonl", mnli(9, "d")),
                       ("heuristics_evaluation_set.jsonl", hans)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def fixture_config(**changes) -> dict:
    """A small grid on the fixture files (tiny-llama); `changes` replace top-level sections."""
    raw = {"name": "fixture", "model": "tiny-llama", "dtype": "float32",
           "data": {"train": {"path": "$BLINDSPOT_FIXTURE_DATA/multinli_1.0_train.jsonl"},
                    "eval": {"mnli-matched": {"path": "$BLINDSPOT_FIXTURE_DATA/multinli_1.0_dev_matched.jsonl"},
                             "hans": {"path": "$BLINDSPOT_FIXTURE_DATA/heuristics_evaluation_set.jsonl"}},
                    "validation_per_label": 2},
           "start_sizes": [0, 6],
           "augment": {"sources": ["original", "synthetic", "biased-lexical-overlap",
                                   "original+biased-lexical-overlap"], "sizes": [3, 6]},
           "audit_filters": ["biased-lexical-overlap"],
           "generation": {"per_label": 4}}
    return {**raw, **changes}


@pytest.fixture
def fixture_env(tmp_path, monkeypatch) -> Path:
    root = fixture_data(tmp_path / "data")
    monkeypatch.setenv("BLINDSPOT_FIXTURE_DATA", str(root))
    return root


# Stage directories of two configs without the new axes, as main planned them before mixtures and
# generator.model (commit 9dccaef): every hash must stay (users' caches).
PINNED_TINY: list[str] = [
    "prepare-3ed38e7ff7ae", "base-87c38060b665", "start-f7cf5bb2cabb", "evaluate-c3a4184fa9cb",
    "augment-910719b46efb", "evaluate-ec4900462550", "augment-3e6fd28829b8", "evaluate-e8d5462cea5a",
    "generator-e79e3d637cea", "generate-eb63654834a4", "augment-34c311356141", "evaluate-096b3c3ff2b3",
    "augment-f0a3aa876fa8", "evaluate-8374f7826e4a", "filter-01999eeb1717", "augment-65b6d8569a71",
    "evaluate-b9af49e1ad04", "augment-1fdf47ff9dac", "evaluate-20021b214f03", "filter-c3e7b874b028",
    "augment-5a4687ab5fbd", "evaluate-a6ef3e0af0f8", "augment-5871c8366f5c", "evaluate-806c11b30119",
    "start-784198b44b35", "evaluate-4024adc52b54", "augment-8b7e41a63953", "evaluate-4057e5b6a2cb",
    "augment-019f9aea9271", "evaluate-5d68aa360a8a", "augment-d9ee30428e74", "evaluate-1cf9ae4886d6",
    "augment-154f378c9941", "evaluate-71aae3b6a5be", "augment-b23891912cd6", "evaluate-2d581682c5a7",
    "augment-a5d301470bc2", "evaluate-daa7096f5d15", "augment-50f8522f777d", "evaluate-c544a00afc2e",
    "augment-9ca8e9df55c4", "evaluate-6b9981e3ed42", "audit-462c1931b665",
]
PINNED_SMOLLM2: list[str] = [
    "prepare-3ed38e7ff7ae", "start-e47d2f2ff780", "evaluate-32c70ef73e6c", "generator-b2c2318c6af8",
    "generate-f32867e0b7b4", "augment-9c37032bc7de", "evaluate-21f7e3876e79", "augment-9c5e14cf4514",
    "evaluate-9372a001df81", "start-be6f48bdc882", "evaluate-d0d706a3a7b9", "augment-580c8f5461db",
    "evaluate-25ed1d966dde", "augment-70a27dff6c25", "evaluate-c9ae0b298752", "start-88a867cbe31b",
    "evaluate-d9fc1fbc3b32", "augment-5e6b8ca99046", "evaluate-c9e502c25c73", "augment-7a338ed85cbf",
    "evaluate-605af228abfb", "start-25eff79082bc", "evaluate-b374ab6b5c24", "augment-fdf65bae8510",
    "evaluate-9772f132f924", "augment-1ea3cbccb52f", "evaluate-91f0f0b28885", "filter-8f2f6853291c",
    "audit-2e23f561d7ae",
]
SMOLLM2 = {"model": "smollm2-135m", "dtype": "bfloat16", "quantize": "4bit", "seeds": [0, 1],
           "augment": {"sources": ["synthetic", "original"], "sizes": [6], "exclude_seen": True}}


# --- counts and sampling ----------------------------------------------------------------------

def test_counts_are_exact_balanced_and_the_asked_share_per_label():
    for m in range(1, 41):
        for f in (0, 0.1, 0.25, 0.29, 1 / 3, 0.5, 0.75, 0.9, 1):
            counts = mixture_counts(m, MNLI_LABELS, f)
            per_label = [m // 3 + (i < m % 3) for i in range(3)]
            assert [o + s for o, s in counts.values()] == per_label  # sample_balanced's per-label sizes
            exact = Fraction(repr(f))
            assert sum(s for _, s in counts.values()) == int(exact * m + Fraction(1, 2))  # round(f m), halves up
            for (o, s), n in zip(counts.values(), per_label):
                assert o >= 0 and s >= 0 and abs(s - exact * n) < 1  # each label's share is f, within 1
    assert mixture_counts(6, MNLI_LABELS, 0.5) == {"entailment": (1, 1), "neutral": (1, 1), "contradiction": (1, 1)}
    # 1.5 synthetic is 2 (halves up), by largest remainder: the first two labels (ties in label order)
    assert mixture_counts(6, MNLI_LABELS, 0.25) == {"entailment": (1, 1), "neutral": (1, 1), "contradiction": (2, 0)}
    # m_i = 4, 3, 3 and f m_i = 2, 1.5, 1.5: 5 synthetic, the tie to neutral
    assert mixture_counts(10, MNLI_LABELS, 0.5) == {"entailment": (2, 2), "neutral": (1, 2), "contradiction": (2, 1)}
    assert sum(s for _, s in mixture_counts(100, MNLI_LABELS, 0.29).values()) == 29  # not 28 (0.29 * 100 < 29)


def _examples(prefix: str, per_label: int) -> list[NLIExample]:
    return [NLIExample(f"{prefix}{lab[0]}{i}", f"premise {prefix} {i}", f"hypothesis {i}", lab)
            for lab in MNLI_LABELS for i in range(per_label)]


def test_sample_mixture_is_exact_and_the_endpoints_are_the_pure_samples():
    original, synthetic = _examples("o", 20), _examples("s", 8)
    excluded = [e.id for e in original[:5]]
    for m in (1, 5, 6, 12, 13):
        for f in (0, 0.25, 0.5, 0.75, 1):
            got = sample_mixture(original, synthetic, m, f, 3, MNLI_LABELS, excluded)
            assert len(got) == m and len({e.id for e in got}) == m and not set(excluded) & {e.id for e in got}
            for label, (n_orig, n_syn) in mixture_counts(m, MNLI_LABELS, f).items():
                mine = [e for e in got if e.label == label]
                kinds = [e.id[0] for e in mine]
                assert (kinds.count("o"), kinds.count("s")) == (n_orig, n_syn)
        # f = 0 is the original condition's sample, f = 1 the synthetic one's: the same stages
        assert sample_mixture(original, synthetic, m, 0, 3, MNLI_LABELS, excluded) == \
            sample_balanced(original, m, 3, MNLI_LABELS, excluded)
        assert sample_mixture(original, synthetic, m, 1, 3, MNLI_LABELS, excluded) == \
            sample_balanced(synthetic, m, 3, MNLI_LABELS)
    # nested in f: more synthetic replaces original examples and keeps the rest
    low, high = (set(e.id for e in sample_mixture(original, synthetic, 12, f, 0, MNLI_LABELS)) for f in (0.25, 0.75))
    assert {i for i in high if i.startswith("o")} <= low and {i for i in low if i.startswith("s")} <= high


def test_too_few_synthetic_examples_is_one_error():
    with pytest.raises(ConfigError, match="cannot sample 3 synthetic examples labelled 'entailment': 2 available"):
        sample_mixture(_examples("o", 9), _examples("s", 2), 9, 1.0, 0, MNLI_LABELS)


def test_source_names_and_fractions():
    assert mixture_name("synthetic", 0.25) == "mix0.25:synthetic"
    assert parse_mixture("mix0.25:biased-lexical-overlap") == ("biased-lexical-overlap", 0.25)
    assert parse_mixture("original+biased-lexical-overlap") is None and parse_mixture("synthetic") is None
    assert [synthetic_fraction(s) for s in ("start", "original", "original+biased-lexical-overlap", "synthetic",
                                            "biased-lexical-overlap", "mix0.5:synthetic")] == [None, 0, 0, 1, 1, 0.5]


# --- config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("augment, field", [
    ({"synthetic_fraction": [0, 1.5]}, "augment.synthetic_fraction"),
    ({"synthetic_fraction": [0.5, 0.5]}, "augment.synthetic_fraction"),
    ({"synthetic_fraction": [0.5], "mixture_sources": ["original"]}, "augment.mixture_sources"),
    ({"synthetic_fraction": [0.5], "mixture_sizes": [0]}, "augment.mixture_sizes"),
    ({"mixture_sizes": [6]}, "augment"),
    ({"mixture_sources": ["biased-lexical-overlap"]}, "augment"),
])
def test_bad_mixture_fields_are_named(augment, field):
    raw = fixture_config(augment={"sources": ["original"], "sizes": [6], **augment})
    with pytest.raises(ConfigError, match=rf"field '{field}'"):
        parse_config(raw)


def test_augment_conditions_add_mixtures_once():
    cfg = parse_config(fixture_config(augment={"sources": ["original", "synthetic"], "sizes": [3, 6],
                                               "synthetic_fraction": [0, 0.25, 0.5, 1], "mixture_sizes": [6, 9]}))
    conds = augment_conditions(cfg.augment)
    assert conds[:4] == [(s, m, s, None) for s in ("original", "synthetic") for m in (3, 6)]  # as before
    assert conds[4:] == [("mix0.25:synthetic", 6, "synthetic", 0.25), ("mix0.5:synthetic", 6, "synthetic", 0.5),
                         ("original", 9, "original", None), ("mix0.25:synthetic", 9, "synthetic", 0.25),
                         ("mix0.5:synthetic", 9, "synthetic", 0.5), ("synthetic", 9, "synthetic", None)]


# --- the planner --------------------------------------------------------------------------------

def _dirnames(raw: dict) -> list[str]:
    from blindspot.grid import build_plan

    return [s.dirname for s in build_plan(parse_config(raw)).stages]


def test_configs_without_the_new_axes_keep_their_stage_hashes(fixture_env):
    assert _dirnames(fixture_config()) == PINNED_TINY
    assert _dirnames(fixture_config(**SMOLLM2)) == PINNED_SMOLLM2
    # naming the classifier's own model as the generator's, and its dtype / quantize, is the same plan
    same = {"model": "smollm2-135m", "dtype": "bfloat16", "quantize": "4bit"}
    assert _dirnames(fixture_config(**SMOLLM2, generator=same)) == PINNED_SMOLLM2


def test_mixtures_add_only_their_own_augment_and_evaluate_stages(fixture_env):
    from blindspot.grid import build_plan

    raw = fixture_config(augment={**fixture_config()["augment"], "synthetic_fraction": [0, 0.5, 1],
                                  "mixture_sizes": [6]})
    plan = build_plan(parse_config(raw))
    new = [s for s in plan.stages if s.dirname not in set(PINNED_TINY)]
    assert set(PINNED_TINY) <= {s.dirname for s in plan.stages}
    assert sorted(s.stage for s in new) == ["augment", "augment", "evaluate", "evaluate"]  # f = 0.5 x 2 starts
    for st in (s for s in new if s.stage == "augment"):
        assert st.spec["synthetic_fraction"] == 0.5 and st.spec["source"] == "synthetic" and st.spec["m"] == 6
        assert set(st.inputs) == {"start", "data", "original"} and st.inputs["original"].stage == "prepare"
        assert st.inputs["data"].stage == "generate"
    sources = [(c["start_size"], c["source"], c["aug_size"]) for c in plan.conditions]
    assert len(sources) == len(set(sources)) == 2 * (1 + 4 * 2 + 1)  # f = 0 / 1: the pure conditions, once
    assert (6, "mix0.5:synthetic", 6) in sources
    # a mixture of biased synthetic data, at a size of its own: its filter feeds it
    raw = fixture_config(augment={"sources": ["original"], "sizes": [3], "synthetic_fraction": [0.5],
                                  "mixture_sources": ["biased-lexical-overlap"], "mixture_sizes": [6]})
    plan = build_plan(parse_config(raw))
    mixes = [s for s in plan.stages if s.stage == "augment" and s.spec.get("synthetic_fraction")]
    assert len(mixes) == 2 and all(s.inputs["data"].stage == "filter" for s in mixes)
    # every fraction 0: original data only, so no generator at all
    raw = fixture_config(augment={"sources": ["original"], "sizes": [3], "synthetic_fraction": [0]},
                         audit_filters=[])
    assert not any(s.stage == "generator" for s in build_plan(parse_config(raw)).stages)


# --- results and report -------------------------------------------------------------------------

def _mixture_run(root: Path) -> Path:
    """A run dir (fixture evaluations) of one start, original / synthetic / a 0.5 mixture at m = 6, 2 seeds,
    whose config has a mixture axis and another generator model."""
    import numpy as np

    from blindspot.results import ResultEntry, RunIndex, write_index
    from test_results import write_eval_dir

    rng = np.random.default_rng(0)
    entries = []
    for source, aug in (("start", 0), ("original", 6), ("synthetic", 6), ("mix0.5:synthetic", 6)):
        for seed in (0, 1):
            rel = f"stages/evaluate-{source.replace(':', '_')}-{seed}"
            write_eval_dir(root / rel, rng)
            entries.append(ResultEntry(start_size=0, source=source, aug_size=aug, seed=seed, eval_dir=rel))
    config = {"model": "tiny-llama", "generator": {"model": "tiny-llama-wide"},
              "augment": {"sources": ["original", "synthetic"], "sizes": [6], "synthetic_fraction": [0, 0.5, 1],
                          "mixture_sources": ["synthetic"], "mixture_sizes": None}}
    write_index(root, RunIndex(name="mixtures", config=config, conditions=entries))
    return root


def test_results_have_the_synthetic_fraction_and_the_report_a_mixture_figure(tmp_path):
    import pandas as pd

    from blindspot.mixture_report import build_mixture_figure, mixture_axis, mixture_table
    from blindspot.report import write_report
    from blindspot.report_figures import table_lines
    from blindspot.results import aggregate_seeds, load_index, load_results

    run_dir = _mixture_run(tmp_path / "run")
    df = load_results(run_dir)
    by_source = df.groupby("source")["synthetic_fraction"].agg(["min", "max"]).to_dict("index")
    assert by_source["original"] == {"min": 0, "max": 0} and by_source["synthetic"] == {"min": 1, "max": 1}
    assert by_source["mix0.5:synthetic"] == {"min": 0.5, "max": 0.5} and df.loc[df.source == "start",
                                                                                  "synthetic_fraction"].isna().all()
    saved = pd.read_csv(run_dir / "results" / "results.csv")
    assert "synthetic_fraction" in saved.columns
    agg, config = aggregate_seeds(df), load_index(run_dir).config
    lines = table_lines(df, "mnli_dev_matched", "hans")
    axis = mixture_axis(config)
    assert axis == ([0, 0.5, 1], ["synthetic"], [6])
    fig = build_mixture_figure(agg, axis, [lines[0], lines[2]], lines[3])
    top, low = fig.axes[0], fig.axes[1]
    assert len(top.containers) == 2 and len(low.containers) == 1  # one line per eval line, 3 points each
    assert [len(c.lines[0].get_xdata()) for c in top.containers] == [3, 3]
    table = mixture_table(agg, axis, lines)
    assert list(table["fraction"]) == [0, 0.5, 1] and (table["n_seeds"] == 2).all()
    out = write_report(run_dir)
    md = (out / "report.md").read_text()
    assert (out / "figure_mixtures.png").read_bytes()[:4] == b"\x89PNG"
    assert "Classifier model: `tiny-llama`. Synthetic data written by another model: `tiny-llama-wide`" in md
    assert "## Mixtures of synthetic and original data" in md and "| synthetic data from |" in md
    results = md.split("## Results")[1].split("\n## ")[0]
    rows = [r for r in results.splitlines() if r.startswith("| 0 |")]
    assert {r.split(" | ")[1]: r.split(" | ")[2] for r in rows} == {
        "start": "", "original": "", "synthetic": "tiny-llama-wide", "mix0.5:synthetic": "tiny-llama-wide"}
