"""Synthetic data from another model than the classifier's: `generator.model` (and its dtype / quantize).

    generator:
      model: tiny-llama-wide   # None (the default): the classifier's `model`, as before
      quantize: 4bit           # optional, the generator's own (None: the top-level quantize); dtype likewise

The generator stage trains `generator.model` (after a `base` stage of its own when it is built from
the data, like tiny-llama), the generate stage samples from it, and every augmentation from its
data continues the classifier's `model`: a bigger model's synthetic data training a smaller
classifier, or the reverse. With the default every stage is the one of before, hash for hash.

Checked when the config loads, before anything runs (config.parse_config; one ConfigError naming
the field, so the CLI prints one line and exits 2):
- the model: a built-in, a hub id, or a checkpoint directory that is a base model (config.json and
  a tokenizer; not a saved classifier, generator or stage output) of a kind with a causal-LM head;
- the template fits the model: a training text (`generator.max_length` tokens) and a sample
  (`generation.max_new_tokens`) within its context (built-ins and local checkpoints; a hub
  model's context is checked when it loads);
- the labels fit: the generator writes label-first examples of MNLI's labels (its template's
  prefix names the label, generation.per_label asks for each), so the classifier's task
  (`data.train`) must have exactly those labels.

Recorded: `models_record` = {classifier, generator} in the spec (stage.json) of the generator,
generate and augment stages that involve synthetic data, and as `models` in the facts those stages
return for their meta.json (`with_models`; the store writes it). It is not hashed
(artifacts.NOT_HASHED): a generator does not depend on which classifier its data trains, so one
generator stage serves every classifier; its record names the run that made it.
"""

from __future__ import annotations

import json
from pathlib import Path

from blindspot.errors import ConfigError

# Context (max_position_embeddings) of the built-ins: build_tiny_llama's 1024; SmolLM2-135M's 8192.
BUILTIN_CONTEXT = {"smollm2-135m": 8192, "tiny-llama": 1024, "tiny-llama-wide": 1024}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def generator_choice(cfg) -> dict:
    """The generator stage's ModelChoice: generator.model / dtype / quantize, each defaulting to the
    classifier's (so a config without them plans the same spec as before)."""
    g = cfg.generator
    return {"model": g.model or cfg.model, "device": cfg.device, "dtype": g.dtype or cfg.dtype,
            "quantize": g.quantize or cfg.quantize}


def models_record(cfg) -> dict[str, str]:
    """{classifier, generator}: the two models of a run, as the stages that involve synthetic data record them."""
    return {"classifier": cfg.model, "generator": cfg.generator.model or cfg.model}


def is_cross_model(config: dict) -> bool:
    """Whether a run's config (JSON, as results/index.json holds it) has a generator model of its own."""
    gen = (config.get("generator") or {}).get("model")
    return gen is not None and gen != config.get("model")


def models_line(config: dict) -> str:
    """One line naming both models of a run, for the report."""
    classifier = config.get("model", "?")
    if is_cross_model(config):
        return (f"Classifier model: `{classifier}`. Synthetic data written by another model: "
                f"`{config['generator']['model']}` (`generator.model`).")
    return f"Classifier model: `{classifier}`; the synthetic data is written by the same model."


def generator_column(table, config: dict):
    """The report's results table with a column naming the generator model of each row's synthetic data,
    in a run whose generator is another model (the table as it is otherwise)."""
    from blindspot.mixture import synthetic_fraction

    if not is_cross_model(config):
        return table
    gen = config["generator"]["model"]
    out = table.copy()
    out.insert(list(out.columns).index("source") + 1, "synthetic data from",
               [gen if (synthetic_fraction(s) or 0) > 0 else "" for s in out["source"]])
    return out


def with_models(facts: dict, record: dict | None) -> dict:
    """A stage's facts for meta.json with `models` = record added (the facts as they are without a record)."""
    return {**facts, "models": dict(record)} if record else facts


# --- the check when the config loads ----------------------------------------------------------

def task_labels(train) -> tuple[str, ...]:
    """The classifier's task's labels from data.train: its label_space, else its label map's, else MNLI's."""
    from blindspot.data.example import MNLI_LABELS
    from blindspot.data.generic import default_label_space

    if train.label_space:
        return tuple(train.label_space)
    return default_label_space(train.labels) if train.labels else MNLI_LABELS


def check_generator(cfg, where: str = "config") -> None:
    """ConfigError naming the field when the generator cannot write the classifier's task's examples."""
    if not cfg.needs_synthetic():
        return
    from blindspot.data.example import MNLI_LABELS
    from blindspot.generation.parsing import GenerationTemplate, check_template
    from blindspot.templates import END_MARKER, GENERATOR_BODY, GENERATOR_PREFIX

    labels = task_labels(cfg.data.train)
    if set(labels) != set(MNLI_LABELS):
        field = "data.train.label_space" if cfg.data.train.label_space else "data.train.labels"
        raise ConfigError(f"{where}: field '{field}': the classifier's task has labels {list(labels)}, but the "
                          f"generator writes examples of {list(MNLI_LABELS)} (its template's prefix names the "
                          "label; generation.per_label asks for each), so its synthetic data cannot augment this "
                          "task; use only 'original' sources, or a task with those labels")
    problems = check_template(GenerationTemplate(GENERATOR_PREFIX, GENERATOR_BODY, END_MARKER))
    if problems:  # the built-in template; kept honest here should it ever become configurable
        raise ConfigError(f"{where}: field 'generator': template: {'; '.join(problems)}")
    name = cfg.generator.model
    if name is None or name == cfg.model:  # the classifier's own model: resolved and checked where it loads
        return
    context = _model_context(name, f"{where}: field 'generator.model'")
    if context is None:
        return
    for key, n in (("generator.max_length", cfg.generator.max_length),
                   ("generation.max_new_tokens", cfg.generation.max_new_tokens)):
        if n > context:
            raise ConfigError(f"{where}: field '{key}': {n} tokens do not fit the generator model {name!r}, "
                              f"whose context is {context} tokens")


def _model_context(name: str, where: str) -> int | None:
    """The context in tokens of a built-in or a local base checkpoint (None for a hub id); ConfigError
    `where` when the name is no model or the directory is no base model with a causal-LM head."""
    import os

    from blindspot.models.checkpoint_files import TOKENIZER_JSON_FILES, directory_kind
    from blindspot.models.resolve import BUILTIN_MODELS, HUB_ID

    if name in BUILTIN_MODELS:
        return BUILTIN_CONTEXT[name]
    path = Path(os.path.expandvars(name)).expanduser()
    if not path.is_dir():
        if HUB_ID.match(name) and not name.startswith((".", "/", "~")):
            return None  # fetched when the stage runs; its context is checked when it loads
        raise ConfigError(f"{where}: unknown model {name!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), not "
                          "an existing directory, not a hub id like owner/name")
    what = directory_kind(path)
    if what != "a base model checkpoint":
        raise ConfigError(f"{where}: {path} is {what or 'no transformers checkpoint (no config.json)'}, expected "
                          "a base model directory (config.json, weights, tokenizer)")
    if not any((path / f).is_file() for f in (*TOKENIZER_JSON_FILES, "tokenizer.model")):
        raise ConfigError(f"{where}: {path} has no tokenizer (tokenizer.json or tokenizer.model): the generator's "
                          "template is written in its own tokens")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: {path / 'config.json'}: not readable JSON ({e})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = config.get("model_type")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"{where}: {path} is a {kind!r} model, which has no causal-LM head in transformers: "
                          "the generator writes text, so it must be a causal LM (e.g. llama, qwen2, mistral)")
    found = [config[k] for k in _CONTEXT_KEYS if isinstance(config.get(k), int)]
    return found[0] if found else None
