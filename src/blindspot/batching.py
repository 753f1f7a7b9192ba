"""Batching for inference: length batches, and running the tokens several inputs start with once.

    python -c "from blindspot.batching import share_groups; print(share_groups([[1,2,3,4,5],[1,2,3,4,6]], 2))"

Length batches (`length_batches`): longest first, capped in examples and padded tokens.

Shared starts (`share_groups`, `group_batches`, `grouped_logits`): MNLI writes about three
hypotheses per premise (dev-matched: 9,815 pairs, 3,505 premises), so inputs `prefix + premise +
hypothesis + question` of one premise share their first tokens. A group of k inputs sharing s
leading tokens costs s + sum(len - s) tokens instead of sum(len): stage A runs the shared tokens of
a batch of groups (cut to the batch's shortest, so no padding) on the template's prefix cache; stage B
copies each group's cache to its members and runs their right-padded remainders. Grouping is by
token ids, not by text, so every model input stays exactly `prefix + suffix` and the probabilities
match the ungrouped computation up to float rounding (tests/test_evaluate.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from blindspot.errors import ConfigError


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


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def share_groups(suffixes: Sequence[Sequence[int]], min_shared: int = 4) -> list[tuple[int, list[int]]]:
    """(shared length, member indices) for sets of >= 2 suffixes that start with the same tokens.

    Suffixes are sorted by their tokens; a run of neighbours joins one group while each shares
    the group's whole start (at least `min_shared` tokens). Every member keeps >= 1 token of
    its own, so each still has a last position of its own to classify. Indices in no group
    are left out (they take the ordinary path).
    """
    order = sorted(range(len(suffixes)), key=lambda i: tuple(suffixes[i]))
    groups: list[tuple[int, list[int]]] = []
    shared, members = 0, [order[0]] if order else []
    for i in order[1:]:
        common = _common_length(suffixes[members[0]], suffixes[i])
        common = min(common, len(suffixes[i]) - 1, min(len(suffixes[j]) for j in members) - 1)
        if len(members) == 1 and common >= min_shared:
            shared, members = common, members + [i]
        elif len(members) > 1 and common >= shared:
            members.append(i)
        else:
            if len(members) > 1:
                groups.append((shared, members))
            shared, members = 0, [i]
    if len(members) > 1:
        groups.append((shared, members))
    return groups


def group_batches(groups: Sequence[tuple[int, list[int]]], lengths: Sequence[int], batch_size: int,
                  max_tokens: int, slack: float = 0.85) -> list[list[tuple[int, list[int]]]]:
    """Batches of groups: <= batch_size rows, <= max_tokens padded rest tokens each.

    A batch runs the shortest shared start of its groups (a shorter start is still shared, so
    inputs do not change); groups join while that stays >= `slack` x the batch's longest one.
    """
    ordered = sorted(groups, key=lambda g: (-g[0], -max(lengths[i] for i in g[1])))
    batches: list[list[tuple[int, list[int]]]] = []
    current: list[tuple[int, list[int]]] = []
    for g in ordered:
        members = [i for _, m in current for i in m] + g[1]
        width = max(lengths[i] for i in members) - g[0]
        if current and (len(members) > batch_size or len(members) * width > max_tokens
                        or g[0] < slack * current[0][0]):
            batches.append(current)
            current = []
        current.append(g)
    if current:
        batches.append(current)
    return batches


def planned_tokens(work: Sequence[tuple[str, list]], lengths: Sequence[int]) -> int:
    """Token positions a batch plan computes, padding included (stage A + stage B for groups)."""
    total = 0
    for kind, batch in work:
        if kind == "single":
            total += len(batch) * max(lengths[i] for i in batch)
        else:
            shared = min(g[0] for g in batch)
            members = [i for _, m in batch for i in m]
            total += len(batch) * shared + len(members) * max(lengths[i] - shared for i in members)
    return total


def batch_plan(lengths: Sequence[int], groups: Sequence[tuple[int, list[int]]], batch_size: int,
               max_tokens: int, min_saving: float = 0.2) -> list[tuple[str, list]]:
    """("single", indices) and ("grouped", groups) batches; groups only if they save >= min_saving of the tokens.

    Grouped batches are smaller and more numerous, so on a CPU a small saving in tokens is
    lost to worse matrix shapes (measured: 12 % fewer tokens, no faster): below `min_saving`
    the plain length batches are used.
    """
    flat = [("single", b) for b in length_batches(lengths, batch_size, max_tokens)]
    if not groups:
        return flat
    grouped = {i for _, members in groups for i in members}
    singles = [i for i in range(len(lengths)) if i not in grouped]
    work: list[tuple[str, list]] = [("single", [singles[j] for j in b])
                                    for b in length_batches([lengths[i] for i in singles], batch_size, max_tokens)]
    work += [("grouped", b) for b in group_batches(groups, lengths, batch_size, max_tokens)]
    keep = planned_tokens(work, lengths) <= (1 - min_saving) * planned_tokens(flat, lengths)
    return work if keep else flat


def _cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]]):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers, config=model.config)


def grouped_logits(model, prefix_kv, prefix_len: int, suffixes: Sequence[Sequence[int]],
                   batch: Sequence[tuple[int, list[int]]], pad_id: int, device: torch.device) -> torch.Tensor:
    """Logits of every member of `batch`, in member order; the batch shares its shortest start."""
    shared = min(g[0] for g in batch)
    starts = torch.tensor([list(suffixes[m[0]][:shared]) for _, m in batch], dtype=torch.long)
    n_groups = len(batch)
    cache = None
    if prefix_kv:
        cache = _cache(model, [(k.expand(n_groups, -1, -1, -1), v.expand(n_groups, -1, -1, -1))
                               for k, v in prefix_kv])
    mask = torch.ones((n_groups, prefix_len + shared), dtype=torch.long)
    out = model(input_ids=starts.to(device), attention_mask=mask.to(device), past_key_values=cache, use_cache=True)
    owner = torch.tensor([g for g, (_, m) in enumerate(batch) for _ in m], device=device)
    layers = [(layer.keys.index_select(0, owner), layer.values.index_select(0, owner))
              for layer in out.past_key_values.layers]
    rests = [list(suffixes[i][shared:]) for _, m in batch for i in m]
    width = max(len(r) for r in rests)
    ids = torch.full((len(rests), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rests), prefix_len + shared + width), dtype=torch.long)
    mask[:, : prefix_len + shared] = 1
    for row, r in enumerate(rests):
        ids[row, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[row, prefix_len + shared: prefix_len + shared + len(r)] = 1
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=_cache(model, layers),
                use_cache=True)
    return out.logits.float()
