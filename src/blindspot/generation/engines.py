"""Generation engines: which one runs (`generation.engine`), and the native one.

    blindspot generate --generator runs/generator --n-per-label 1000 --out runs/synthetic --engine auto

An engine turns (label, batch index, batch seed) into `batch_size` generated token sequences;
everything else (prompts, parsing, reject accounting, dedup, leakage, files, resumption) is
blindspot.generation.sample's and the same for every engine. Each engine counts the model FLOPs it
computes (`counter`, blindspot.mfu's inference formula: the tokens it feeds, prompt and
generated) for the stage's MFU.

- `native`: blindspot.generation.decode's prompt-cached decoder on the loaded transformers model (LoRA
  merged). Batch b's rows are drawn from one torch.Generator seeded with the batch seed.
- `vllm`: blindspot.generation.vllm_engine (vLLM, continuous batching and paged attention; the LoRA
  adapter served through `LoRARequest`). Each request has its own seed.
- `auto`: vLLM when the device is CUDA and vllm is installed, native otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Literal, Protocol

import torch

from blindspot.errors import ConfigError
from blindspot.mfu import FlopCounter, flop_shape
from blindspot.generation.parsing import doomed_reason

if TYPE_CHECKING:
    from blindspot.generation.sample import GenerateSpec
    from blindspot.training.generator import Generator

log = logging.getLogger(__name__)

ENGINES = ("auto", "native", "vllm")
EngineName = Literal["auto", "native", "vllm"]


class Engine(Protocol):
    """What blindspot.generation.sample needs from an engine."""

    name: str
    gen: "Generator"  # tokenizer, template, labels and name of the generator (the model only for native)
    dtype: torch.dtype
    counter: FlopCounter  # model FLOPs and tokens computed since the last reset()

    def sample(self, spec: "GenerateSpec", label: str, batch: int, seed: int) -> tuple[list[list[int]], int]:
        """(generated token ids of each of the batch's spec.batch_size rows, decode tokens computed)."""

    def describe(self) -> dict:
        """Device, dtype and engine facts for meta.json."""

    def reset(self) -> None:
        """Forget what the last run left cached (each run computes its own rows); zero the counter."""

    def close(self) -> None:
        """Release the engine's processes and memory."""


def vllm_installed() -> bool:
    """Whether `import vllm` would find a package (without paying the 10 s import)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(engine: str, device: str = "auto") -> tuple[str, str]:
    """(native | vllm, why): `auto` is vLLM on CUDA when vllm is installed, native otherwise."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "vllm" and not vllm_installed():
        raise ConfigError("engine vllm: vllm is not installed (GPU: pip install -e '.[vllm]' next to CUDA torch; "
                          "CPU: bash scripts/setup_vllm.sh, then use .venv-vllm)")
    if engine != "auto":
        return engine, "as asked"
    on_cuda = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
    if not on_cuda:
        return "native", "auto: no CUDA device"
    if not vllm_installed():
        return "native", "auto: CUDA, but vllm is not installed (pip install -e '.[vllm]')"
    return "vllm", "auto: CUDA and vllm installed"


class NativeEngine:
    """blindspot.generation.decode's decode loop on a loaded Generator; the prompt cache of the current label is kept."""

    name = "native"

    def __init__(self, gen: "Generator"):
        self.gen, self.dtype = gen, gen.model.dtype
        self.counter = FlopCounter(flop_shape(gen.model))  # merged LoRA: the base's shape (unmerged 4-bit: + LoRA)
        self._prompt: tuple[str | None, object] = (None, None)
        self._stop: tuple[int | None, object] = (None, None)

    def _stop_rule(self, max_chars: int):
        """The StopRule (end marker, EOS, doomed text) for `max_chars`, built once."""
        from blindspot.generation.decode import StopRule

        if self._stop[0] != max_chars:
            gen = self.gen
            self._stop = (max_chars, StopRule.build(
                gen.tokenizer, gen.template.end_marker, gen.model.config.vocab_size,
                doomed=lambda text: doomed_reason(text, "", gen.template, max_chars) is not None))
        return self._stop[1]

    def sample(self, spec: "GenerateSpec", label: str, batch: int, seed: int) -> tuple[list[list[int]], int]:
        from blindspot.generation.decode import decode_batch, encode_prompt

        prompt_len = len(self.gen.prompt_ids(label))
        if self._prompt[0] != label:  # the prompt's cache is computed once per label
            self._prompt = (label, encode_prompt(self.gen.model, self.gen.prompt_ids(label)))
            self.counter.add([prompt_len])
        rng = torch.Generator(device=self.gen.device).manual_seed(seed)
        rows, n_tok = decode_batch(self.gen.model, self._prompt[1], spec.batch_size, self._stop_rule(spec.max_chars),
                                   max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                                   top_k=spec.top_k, top_p=spec.top_p, generator=rng)
        self.counter.add([len(r) - 1 for r in rows], prompt_len)  # each row fed all its tokens but the last back
        return rows, n_tok

    def describe(self) -> dict:
        return {"engine": self.name, "device": str(self.gen.device), "dtype": str(self.gen.model.dtype)}

    def reset(self) -> None:
        self._prompt = (None, None)
        self.counter = FlopCounter(self.counter.shape)

    def close(self) -> None:
        self.reset()


def choose_engine(spec: "GenerateSpec", engine: Engine | None = None) -> tuple[str, str]:
    """(native | vllm, why) for a run: the engine passed in, or spec.engine resolved."""
    if engine is None:
        return resolve_engine(spec.engine, spec.device)
    if spec.engine not in ("auto", engine.name):
        raise ConfigError(f"engine: the spec asks for {spec.engine!r} but a {engine.name!r} engine was passed")
    return engine.name, "passed in"


def open_engine(name: str, spec: "GenerateSpec", generator: "Generator | None" = None) -> Engine:
    """A new engine `name` for the spec's generator (`generator`: an already loaded one, native only)."""
    if name == "vllm":
        if generator is not None:
            raise ConfigError("engine vllm loads the generator itself: pass engine=, not a loaded generator")
        from blindspot.generation.vllm_engine import VllmEngine

        return VllmEngine.open(spec.generator, device=spec.device, dtype=spec.dtype, batch_size=spec.batch_size,
                               max_new_tokens=spec.max_new_tokens)
    if generator is None:
        from blindspot.training.generator import load_generator

        generator = load_generator(spec.generator, device=spec.device, dtype=spec.dtype)
    return NativeEngine(generator)
