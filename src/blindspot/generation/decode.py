"""The sampler: a prompt-cached decode loop that drops each row from the batch as it finishes.

    python -c "from blindspot.generation.decode import decode_batch; help(decode_batch)"

Every row of a batch continues the same prompt (one label's prefix), so the prompt runs
through the model once (`encode_prompt`) and its key/value cache is expanded to the batch. All
rows then advance one token per step in lockstep, so no padding or attention mask is needed;
a row that writes the end marker or EOS (or is doomed: already certain to be rejected) is
removed from the batch and from the cache (`DynamicCache.batch_select_indices`) at once.
Used by `blindspot generate`; `benchmarks/bench_generate.py` compares it with HF `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `logits` [B, V]: greedy if temperature is 0, else top-k / top-p sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # keep the smallest set reaching top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Inverse CDF with one uniform draw per row (float64 cumsum, so no token's mass is lost):
    # on CPU about 4x faster than torch.multinomial over a 50k vocabulary.
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    u = torch.rand((cdf.shape[0], 1), generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


@dataclass
class StopRule:
    """When a row is finished: it wrote the end marker's text or an EOS token, or it is doomed."""

    marker: str
    eos_ids: frozenset[int]
    maybe_end: torch.Tensor  # [V] bool: tokens whose text contains the marker's last character
    tail: int  # how many trailing tokens to decode when checking for the marker
    tokenizer: object
    doomed: Callable[[str], bool] | None = None  # text that no continuation can make valid
    check_every: int = 8  # steps between doomed checks (each decodes every active row)

    @classmethod
    def build(cls, tokenizer, marker: str, vocab_size: int,
              doomed: Callable[[str], bool] | None = None) -> "StopRule":
        """Precompute which tokens can end the marker, so most steps decode nothing."""
        marker = marker.strip()
        last = marker[-1]
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        maybe = torch.zeros(max(vocab_size, len(pieces)), dtype=torch.bool)
        for i, piece in enumerate(pieces):
            maybe[i] = piece is not None and (last in piece or not piece.isprintable())
        eos = tokenizer.eos_token_id
        eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        n_marker = len(tokenizer(marker, add_special_tokens=False)["input_ids"])
        return cls(marker, eos_ids, maybe, n_marker + 4, tokenizer, doomed)

    def finished(self, tokens: list[int]) -> bool:
        """Whether the row whose generated tokens are `tokens` has stopped."""
        t = tokens[-1]
        if t in self.eos_ids:
            return True
        if not self.maybe_end[t]:
            return False
        return self.marker in self.tokenizer.decode(tokens[-self.tail:], skip_special_tokens=True)

    def abandon(self, tokens: list[int]) -> bool:
        """Whether an unfinished row's text is already certain to be rejected."""
        return self.doomed is not None and self.doomed(self.tokenizer.decode(tokens, skip_special_tokens=True))


@dataclass
class PromptCache:
    """The key/value cache and next-token logits of one prompt (batch 1), computed once."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor  # [1, V]


@torch.inference_mode()
def encode_prompt(model, prompt_ids: list[int]) -> PromptCache:
    """Run the prompt through the model once and keep its cache."""
    from blindspot.models.kvcache import output_layers

    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True, logits_to_keep=1)
    return PromptCache(list(prompt_ids), output_layers(out), out.logits[:, -1, :])


@torch.inference_mode()
def decode_batch(model, prompt: PromptCache, n_rows: int, stop: StopRule, *, max_new_tokens: int,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[list[list[int]], int]:
    """Generate `n_rows` continuations of one prompt; returns (tokens per row, tokens computed).

    Finished rows are removed from the batch and from the KV cache at every step; every
    `stop.check_every` steps, rows that are doomed (see StopRule) are removed too.
    """
    from blindspot.models.kvcache import cache_arg, expanded_cache

    cache = expanded_cache(prompt.layers, n_rows)
    out: list[list[int]] = [[] for _ in range(n_rows)]
    active = list(range(n_rows))  # row number of each batch position
    logits = prompt.logits.expand(n_rows, -1)
    computed = 0
    for step in range(max_new_tokens):
        next_ids = sample_next(logits, temperature, top_k, top_p, generator)
        keep, check = [], stop.doomed is not None and (step + 1) % stop.check_every == 0
        for pos, (row, tok) in enumerate(zip(active, next_ids.tolist())):
            out[row].append(tok)
            if not stop.finished(out[row]) and not (check and stop.abandon(out[row])):
                keep.append(pos)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=next_ids.device)
            cache.batch_select_indices(index)
            next_ids = next_ids[index]
            active = [active[p] for p in keep]
        logits = model(input_ids=next_ids[:, None], **cache_arg(cache), use_cache=True).logits[:, -1, :]
        computed += len(active)
    return out, computed
