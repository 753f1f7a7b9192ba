"""The experiment config: one YAML file, validated on load, that describes a whole grid.

    python -c "from blindspot.config import load_config; print(load_config('configs/demo.yaml'))"

Every field is typed and described here; a wrong field gets one error that names it (with its
path, e.g. `augment.sizes[1]`) and what was expected. Paths may use $BLINDSPOT_DATA and ~.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from blindspot.data.sources import DataSource
from blindspot.errors import ConfigError
from blindspot.stages.generate import Generation
from blindspot.stages.generator import GeneratorTraining
from blindspot.stages.start import ClassifierTraining

FROZEN = ConfigDict(frozen=True, extra="forbid")
# Augmentation sources: original MNLI, unfiltered synthetic, synthetic through a filter, or
# "original+FILTER": the original pool through a filter (a cheap biased source; not in the paper).
BASE_SOURCES = ("original", "synthetic")
POOL_FILTER_PREFIX = "original+"


class DataConfig(BaseModel):
    """The general task (train + evaluation sets) and the challenge sets."""

    model_config = FROZEN
    train: DataSource = Field(description="General-task training data (cleaned, then split into validation + pool).")
    eval: dict[str, DataSource] = Field(min_length=1, description="Evaluation sets by name, e.g. mnli-matched, hans.")
    clean: bool = Field(True, description="The paper's cleaning: drop '-' labels and every duplicated pair.")
    validation_per_label: int = Field(250, ge=0, description="Label-balanced validation examples held out per label.")
    validation_mode: Literal["sample", "first"] = Field("sample", description="How the validation rows are "
                                                       "chosen: 'sample' (seeded by split_seed) or 'first' (the "
                                                       "first rows of each label in file order, as the reference).")
    split_seed: int = Field(0, description="Seed of the validation hold-out (validation_mode 'sample').")
    start_sampling: Literal["shuffle", "pandas"] = Field("shuffle", description="How a starting point's n pool "
                                                         "examples are drawn with the condition's seed: 'shuffle' "
                                                         "(random.Random) or 'pandas' (DataFrame.sample(n, "
                                                         "random_state=seed), the reference's, with seed 42).")
    eval_per_label: int | None = Field(None, ge=1, description="Evaluate on k per label of 3-way sets (None = all).")
    eval_per_subcase: int | None = Field(None, ge=1, description="Evaluate on k per subcase of HANS-like sets (None = all).")
    eval_seed: int = Field(0, description="Seed of the evaluation subsamples.")

    @field_validator("eval")
    @classmethod
    def _names(cls, v: dict) -> dict:
        bad = [k for k in v if not k.replace("-", "").replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise ValueError(f"set names must be letters, digits, '-', '_' or '.', got {bad}")
        return v


class AugmentConfig(BaseModel):
    """What each starting point is further trained on."""

    model_config = FROZEN
    sources: list[str] = Field(min_length=1, description="'original', 'synthetic', or a filter name applied to the "
                               "synthetic data, e.g. 'biased-lexical-overlap'.")
    sizes: list[int] = Field(min_length=1, description="Augmentation sizes m (label balanced: m/3 per label).")
    exclude_seen: bool = Field(False, description="Original data: never re-sample what the starting point saw "
                               "(the paper samples from the whole pool).")

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: list[str]) -> list[str]:
        from blindspot.filters import FILTERS

        bad = [s for s in v if s not in BASE_SOURCES and s.removeprefix(POOL_FILTER_PREFIX) not in FILTERS]
        if bad:
            raise ValueError(f"unknown source(s) {bad}; expected 'original', 'synthetic', one of "
                             f"{sorted(FILTERS)} (applied to the synthetic data) or 'original+' and one of "
                             "them (applied to the original pool)")
        return v

    @field_validator("sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v):
            raise ValueError(f"sizes must be >= 1 (the starting point itself is size 0), got {v}")
        return v


GenerationMode = Literal["replace", "accumulate"]


class GenerationsConfig(BaseModel):
    """Repeated generations (blindspot.rounds): round t+1's generator is trained on what round t wrote.

    Round 1 is the paper's generator (on `generator.train_size` pool pairs). Each round writes
    `generation.per_label` examples per label, which augment the starting points as the paper's
    synthetic data does (source `synthetic` in round 1, `synthetic-rT-MODE` after it), and
    `train_size` more, its contribution to the next round's training set, of which
    round(real_fraction x train_size) are real pool pairs. Modes as in Gerstgrasser et al. 2024:
    `replace` trains round t+1 on round t's contribution alone; `accumulate` on round 1's real
    training sample plus every contribution so far (the set grows each round). Every round's
    generator is a fresh LoRA on the base model (not a continuation of the previous round's).
    """

    model_config = FROZEN
    rounds: int = Field(1, ge=1, description="Rounds K, counting the paper's generator (1 = the paper only).")
    mode: list[GenerationMode] = Field(["replace"], description="replace, accumulate, or a list of both (each "
                                       "its own chain of rounds after round 1).")
    real_fraction: float = Field(0.0, ge=0, lt=1, description="Share of each round's contribution to the next "
                                 "round's training set that is real pool pairs (0 = all synthetic).")
    train_size: int | None = Field(None, ge=1, description="Examples each round contributes to the next round's "
                                   "training set (None = generator.train_size). A SmolLM2 generator trained on 300 "
                                   "examples wrote no valid example (docs/LOG.md): keep it near round 1's size.")

    def modes(self) -> list[str]:
        return list(self.mode)

    @field_validator("mode", mode="before")
    @classmethod
    def _one_or_a_list(cls, v):
        v = [v] if isinstance(v, str) else v
        if isinstance(v, list) and (not v or len(set(map(str, v))) != len(v)):
            raise ValueError(f"expected replace, accumulate or a list of distinct modes, got {v}")
        return v


class EvaluationConfig(BaseModel):
    model_config = FROZEN
    batch_size: int = Field(32, ge=1, description="Examples per forward pass.")


StageKind = Literal["prepare", "base", "start", "generator", "generate", "filter", "augment", "evaluate", "audit"]


class ResourceRequest(BaseModel):
    """What one stage of a kind asks the Ray cluster for (--executor ray); unset = the default."""

    model_config = FROZEN
    num_cpus: float | None = Field(None, ge=0, description="CPU cores (default 1).")
    num_gpus: float | None = Field(None, ge=0, description="GPUs (default: 1 for training, generation and "
                                   "evaluation when the device is CUDA or the cluster has GPUs, else 0).")
    memory_gb: float | None = Field(None, gt=0, description="Memory reserved for the task, GiB (default none).")


class ClassifierConfig(ClassifierTraining):
    """The `classifier` section: the start and augment stages' own spec part (ClassifierTraining, hashed)
    plus how the grid runs them, which no stage hash covers."""

    group_augmentations: bool = Field(True, description="Train a starting point's augmentation runs together: "
                                      "one base, K adapters, one job (blindspot.training.grouped); the same results, up to "
                                      "float rounding, and the same stage directories as one by one. A model the "
                                      "grouped path does not support is trained one by one (the log says so). "
                                      "Not part of any stage's hash.")

    def training(self) -> ClassifierTraining:
        """The part the stage specs hold (what is hashed): everything but how the grid schedules them."""
        return ClassifierTraining(**{k: getattr(self, k) for k in ClassifierTraining.model_fields})


class ExperimentConfig(BaseModel):
    """One experiment: a model, data, starting sizes x augmentation sources x sizes x seeds."""

    model_config = FROZEN
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; outputs go to runs/<name>/ by default.")
    model: str = Field("smollm2-135m", description="smollm2-135m, tiny-llama, a hub id or a local checkpoint dir.")
    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = Field("auto", description="auto (bf16 on CUDA and on CPUs with native bf16, i.e. AVX512_BF16 "
                       "or AMX; else fp32), float32, bfloat16, float16.")
    quantize: Literal["none", "4bit"] = Field("none", description="4bit: NF4 base via bitsandbytes (CUDA; on CPU "
                                              "through bitsandbytes' CPU backend, slow).")
    overlap_rule: Literal["paper", "words"] = Field("paper", description="Tokens the lexical-overlap and "
                                                    "subsequence heuristics compare, in the filters, the audit and "
                                                    "the evaluation slices: 'paper' (the reference's whitespace "
                                                    "tokens, '.', '?', '!' dropped) or 'words' (punctuation-free "
                                                    "words); see blindspot.heuristics and docs/FIDELITY.md.")
    data: DataConfig
    start_sizes: list[int | Literal["all"]] = Field(min_length=1, description="Starting points: n MNLI pool examples "
                                                    "(0 = untrained, 'all' = the whole pool).")
    augment: AugmentConfig
    seeds: list[int] = Field([0], min_length=1, description="Seeds of each condition (sampling and training).")
    # These sections are the stages' own spec parts (blindspot.stages): the planner puts them into
    # the start / augment, generator and generate specs as they are (classifier: less
    # group_augmentations, which says how the grid runs them, not what they compute).
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    generator: GeneratorTraining = Field(default_factory=GeneratorTraining)
    generation: Generation
    generations: GenerationsConfig = Field(default_factory=GenerationsConfig, description="Repeated "
                                           "generations (blindspot.rounds); default: the paper's single round.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    audit_filters: list[str] = Field(default_factory=list, description="Filters the data audit also shows "
                                     "(those used as augmentation sources are always shown).")
    resources: dict[StageKind, ResourceRequest] = Field(default_factory=dict, description="Per stage kind, "
                                                        "the Ray resource request (--executor ray), e.g. "
                                                        "{start: {num_gpus: 1, num_cpus: 4}}; not part of any "
                                                        "stage's hash.")

    @model_validator(mode="after")
    def _checks(self) -> "ExperimentConfig":
        if any(isinstance(n, int) and n < 0 for n in self.start_sizes):
            raise ValueError(f"start_sizes must be >= 0 or 'all', got {self.start_sizes}")
        from blindspot.filters import FILTERS

        unknown = [f for f in self.audit_filters if f not in FILTERS]
        if unknown:
            raise ValueError(f"audit_filters: unknown filter(s) {unknown}; expected one of {sorted(FILTERS)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.generations.rounds > 1:
            if "synthetic" not in self.augment.sources:
                raise ValueError("generations.rounds > 1: augment.sources needs 'synthetic' (each round's data "
                                 "augments the starting points as the synthetic source does)")
            g = self.generations
            if g.train_size is None and self.generator.train_size is None:
                raise ValueError("generations.train_size: needed when generator.train_size is the whole pool "
                                 "(how many examples each round writes for the next round's training)")
            size = g.train_size or self.generator.train_size
            if size - round(g.real_fraction * size) < 3:
                raise ValueError(f"generations: a round's contribution of {size} with real_fraction "
                                 f"{g.real_fraction} leaves fewer than 3 synthetic examples (one per label)")
        return self

    def needs_synthetic(self) -> bool:
        return bool(self.audit_filters) or any(s != "original" and not s.startswith(POOL_FILTER_PREFIX)
                                               for s in self.augment.sources)

    def filters(self) -> list[str]:
        """Every filter applied to the synthetic data: augmentation sources first, then audit-only ones."""
        named = [s for s in self.augment.sources if s not in BASE_SOURCES and not s.startswith(POOL_FILTER_PREFIX)]
        named += self.audit_filters
        return list(dict.fromkeys(named))


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _one_line(e: ValidationError, where: str) -> ConfigError:
    err = e.errors()[0]
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    got = err.get("input")
    got_text = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f", got {got!r}"
    msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
    return ConfigError(f"{where}: field '{_field_path(err['loc'])}': {msg}{got_text}{more}")


def parse_config(raw: dict, where: str = "config") -> ExperimentConfig:
    """Validate a config dict; one ConfigError naming the first bad field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a YAML mapping of fields, got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise _one_line(e, where) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment config; `overrides` are `dotted.key=yaml-value` strings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    for item in overrides or []:
        apply_override(raw, item)
    return parse_config(raw, str(path))


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` (value parsed as YAML) in a raw config dict."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. seeds=[0,1]")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value)
