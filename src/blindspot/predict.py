"""Class probabilities of a classifier on NLI pairs, fast: every input is tokenised once, the
template's shared prefix (e.g. the paper's instruction) runs through the model once and its
key/value cache is reused by every batch, so each batch computes only its per-example suffix;
batches are sorted by length, capped in padded tokens, and the results put back in the
original order; everything runs under torch.inference_mode. blindspot.evaluate scores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from blindspot.data.example import NLIExample
from blindspot.errors import BlindspotError, ConfigError
from blindspot.mfu import flop_shape
from blindspot.progress import progress_bar
from blindspot.templates import encode_classifier_inputs


def _pad_id(model) -> int:
    """The pad id the classification head looks for when it picks each row's last real token."""
    pad = model.config.get_text_config().pad_token_id
    if pad is None:
        raise BlindspotError("model config has no pad_token_id: batched classification cannot find "
                             "each example's last token (load the model with blindspot.models)")
    return int(pad)


def _prefix_kv(model, prefix_ids: list[int], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the shared prefix once; its per-layer (keys, values), batch dimension 1."""
    from blindspot.models.kvcache import output_layers

    return output_layers(model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True))


def _batch_logits(model, prefix_kv, prefix_len: int, suffixes: list[list[int]], pad_id: int,
                  device: torch.device) -> torch.Tensor:
    """Logits of one batch: right-padded suffixes attending to a fresh copy of the prefix cache."""
    from blindspot.models.kvcache import cache_arg, expanded_cache

    bsz, width = len(suffixes), max(len(s) for s in suffixes)
    ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    mask = torch.zeros((bsz, prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, prefix_len: prefix_len + len(s)] = 1
    # forward appends to the cache in place, so every batch gets its own (expanded) copy
    cache = expanded_cache(prefix_kv, bsz, model.config) if prefix_kv else None
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), **cache_arg(cache),
                use_cache=cache is not None)
    return out.logits.float()


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped longest first: at most `batch_size` examples and `max_tokens` padded tokens each.

    The token cap (default: batch_size x the median length) puts the long tail in smaller
    batches, so a few long examples do not pad a whole batch of shorter ones.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if max_tokens is None and lengths:
        max_tokens = batch_size * max(1, int(np.median(lengths)))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and \
                lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= (max_tokens or 0):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def predict_encoded(model, prefix_ids: list[int], suffixes: list[list[int]], batch_size: int = 32,
                    max_tokens: int | None = None, desc: str = "predict", flops: dict | None = None) -> np.ndarray:
    """Class probabilities [N, num_labels] for pre-tokenised inputs `prefix_ids + suffixes[i]`.

    `flops`, if given, gets "tokens" and "model_flops" added (real tokens only; blindspot.mfu).
    """
    device = next(model.parameters()).device
    pad_id = _pad_id(model)
    batches = length_batches([len(s) for s in suffixes], batch_size, max_tokens)
    probs = np.zeros((len(suffixes), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            prefix_kv = _prefix_kv(model, prefix_ids, device) if prefix_ids else []
            bar = progress_bar(len(suffixes), desc, unit="ex", disable=len(batches) <= 1)
            for idx in batches:
                logits = _batch_logits(model, prefix_kv, len(prefix_ids), [suffixes[i] for i in idx],
                                       pad_id, device)
                probs[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
                bar.update(len(idx))
            bar.close()
    finally:
        model.train(was_training)
    if flops is not None:
        shape = flop_shape(model)
        lengths = [len(s) for s in suffixes]
        flops["tokens"] = flops.get("tokens", 0) + sum(lengths) + len(prefix_ids)
        flops["model_flops"] = flops.get("model_flops", 0) + shape.inference(lengths, len(prefix_ids)) + \
            (shape.inference([len(prefix_ids)]) if prefix_ids else 0)
        flops["shape"] = shape
    return probs


def predict_proba(model, tokenizer, template: str, examples: Sequence[NLIExample], batch_size: int = 32,
                  max_length: int = 512, max_tokens: int | None = None, desc: str = "predict",
                  flops: dict | None = None) -> np.ndarray:
    """Class probabilities [N, num_labels] (classifier label order), prefix computed once."""
    if not examples:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    prefix_ids, suffixes = encode_classifier_inputs(
        tokenizer, template, [(e.premise, e.hypothesis) for e in examples], max_length=max_length)
    return predict_encoded(model, prefix_ids, suffixes, batch_size=batch_size, max_tokens=max_tokens, desc=desc,
                           flops=flops)
