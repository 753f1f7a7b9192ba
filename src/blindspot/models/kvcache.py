"""Key/value caches of transformers models, under the name the installed release uses.

    python -c "from blindspot.models.kvcache import CACHE_ARG; print(CACHE_ARG)"

transformers 5.24 renamed the forward argument and the output field `past_key_values` to
`cache` (the old name warns and is removed in 5.40); earlier 5.x releases know only
`past_key_values`. Their forward takes **kwargs, so an unknown `cache=` would be swallowed and
the model would silently run without the prompt's cache: the name is therefore chosen from the
installed version, never by trying. Used by the prompt caches of evaluate.py and generation/decode.py.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from packaging.version import Version

# the forward keyword and output attribute that hold the cache in this transformers release
CACHE_ARG = "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"

KV = list[tuple[torch.Tensor, torch.Tensor]]


def cache_arg(cache) -> dict[str, Any]:
    """The forward keyword argument that passes `cache` (a transformers Cache or None)."""
    return {CACHE_ARG: cache}


def output_layers(out) -> KV:
    """Per-layer (keys, values) of the cache a forward pass with use_cache=True returned."""
    return [(layer.keys, layer.values) for layer in getattr(out, CACHE_ARG).layers]


def expanded_cache(layers: KV, batch: int, config=None):
    """A fresh DynamicCache holding `layers` (batch 1) expanded to `batch` rows (no copy).

    forward appends to a cache in place, so every batch needs its own.
    """
    from transformers import DynamicCache

    data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers]
    return DynamicCache(ddp_cache_data=data, config=config) if config is not None else DynamicCache(ddp_cache_data=data)
