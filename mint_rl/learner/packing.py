"""Packing sequences into rows: no padding to the longest, and shared prompts computed once.

An RL batch is groups of samples that share a prompt. Instead of running `prompt + completion_i`
for every sample, a row holds `prompt, completion_1, completion_2, ...`: the prompt is computed once
and each completion attends to the prompt and to itself (a block mask, positions continuing from
the prompt). Gradients flow into the shared prompt from every completion, so the result equals
running the sequences one by one. Units (a prompt group, or one sequence) are then spread over
about total/row_capacity rows, longest first into the least-filled row, so short sequences fill
the space that padding to the longest would waste.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Row:
    tokens: list[int]
    positions: list[int]
    segment: list[int]  # attention segment of each column (unique per sequence/prompt)
    prefix_of: list[int]  # for a prompt column: its group id; else -1
    group: list[int]  # group id of each column


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (R, L)
    position_ids: torch.Tensor  # (R, L)
    attention_mask: torch.Tensor  # (R, 1, L, L) bool, True = may attend
    # For datum d, its N_d positions as flat indices into the (R*L) columns.
    columns: list[torch.Tensor]
    real_tokens: int  # columns holding a token (the rest is padding)

    @property
    def padding_fraction(self) -> float:
        total = self.input_ids.numel()
        return 1.0 - self.real_tokens / total if total else 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prompt_groups(seqs: list[list[int]], min_shared: int = 8) -> list[tuple[int, list[int]]]:
    """Groups datums whose sequences share a prefix of at least `min_shared` tokens.

    Returns (shared prefix length, datum indices) per group; single datums have prefix 0.
    """
    order = sorted(range(len(seqs)), key=lambda d: seqs[d])
    groups: list[tuple[int, list[int]]] = []
    for d in order:
        if groups:
            shared, members = groups[-1]
            prev = seqs[members[-1]]
            lcp = _common_prefix(prev, seqs[d])
            new_shared = lcp if len(members) == 1 else min(shared, lcp)
            # A prefix must leave every member at least one token of its own, so no member's
            # last position lies inside the shared block (keeps the column map simple).
            shortest = min(len(seqs[m]) for m in [*members, d])
            new_shared = min(new_shared, shortest - 1)
            # Joining saves new_shared tokens for d but makes each of the m members recompute
            # shared - new_shared: worth it only if m * new_shared > (m - 1) * shared. Without
            # this, prompts that differ after a long common system prompt collapse into one
            # huge unit (one wide row, quadratic attention, more tokens than one group each).
            m = len(members)
            if new_shared >= min_shared and m * new_shared > (m - 1) * shared:
                groups[-1] = (new_shared, [*members, d])
                continue
        groups.append((0, [d]))
    return groups


def pack(
    seqs: list[list[int]],
    *,
    row_capacity: int = 256,
    share_prefixes: bool = True,
    min_shared: int = 8,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
) -> PackedBatch:
    """Packs token sequences into rows; `columns[d]` maps datum d's positions into the rows.
    The tensors are on `device`."""
    if share_prefixes:
        groups = prompt_groups(seqs, min_shared)
    else:
        groups = [(0, [d]) for d in range(len(seqs))]
    unit_len = [shared + sum(len(seqs[d]) - shared for d in members) for shared, members in groups]

    # As few rows as the capacity allows, then longest unit first into the least-filled row:
    # rows come out nearly equal, so padding them to the widest wastes little.
    n_rows = max(1, math.ceil(sum(unit_len) / row_capacity))
    rows = [Row([], [], [], [], []) for _ in range(n_rows)]
    columns: list[tuple[int, list[int]]] = [(0, [])] * len(seqs)  # datum -> (row, columns)
    segment_id = 0
    for g in sorted(range(len(groups)), key=lambda g: -unit_len[g]):
        shared, members = groups[g]
        row_index = min(range(n_rows), key=lambda i: len(rows[i].tokens))
        row = rows[row_index]
        prefix_start = len(row.tokens)
        if shared:
            first = seqs[members[0]]
            row.tokens += first[:shared]
            row.positions += list(range(shared))
            row.segment += [segment_id] * shared
            row.prefix_of += [g] * shared
            row.group += [g] * shared
            segment_id += 1
        for d in members:
            start = len(row.tokens)
            own = seqs[d][shared:]
            row.tokens += own
            row.positions += list(range(shared, len(seqs[d])))
            row.segment += [segment_id] * len(own)
            row.prefix_of += [-1] * len(own)
            row.group += [g] * len(own)
            segment_id += 1
            cols = list(range(prefix_start, prefix_start + shared)) + list(
                range(start, start + len(own))
            )
            columns[d] = (row_index, cols)

    rows = [r for r in rows if r.tokens]  # empty rows can only be the last ones (fewer units)
    return _to_tensors(rows, columns, pad_id, torch.device(device))


def _to_tensors(rows: list[Row], columns: list[tuple[int, list[int]]], pad_id: int,
                device: torch.device) -> PackedBatch:
    """Rows padded to one width, with the block-causal mask of their segments, on `device`."""
    width = max(len(r.tokens) for r in rows)
    n_rows = len(rows)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    segment = torch.full((n_rows, width), -1, dtype=torch.long)
    group = torch.full((n_rows, width), -1, dtype=torch.long)
    is_prefix = torch.zeros((n_rows, width), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.tokens)
        input_ids[i, :n] = torch.tensor(r.tokens)
        position_ids[i, :n] = torch.tensor(r.positions)
        segment[i, :n] = torch.tensor(r.segment)
        group[i, :n] = torch.tensor(r.group)
        is_prefix[i, :n] = torch.tensor([p >= 0 for p in r.prefix_of], dtype=torch.bool)
        # Padding columns: each its own segment, so its attention row is not empty (no NaN).
        pad = torch.arange(n, width)
        segment[i, n:] = -2 - pad
        group[i, n:] = -2 - pad

    # Rows are filled on the CPU and moved once; the (R, L, L) mask is built where it is used,
    # so only the (R, L) tensors cross to the device.
    input_ids, position_ids, segment, group, is_prefix = (
        t.to(device) for t in (input_ids, position_ids, segment, group, is_prefix))
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    same_group = group[:, :, None] == group[:, None, :]
    same_segment = segment[:, :, None] == segment[:, None, :]
    mask = causal & same_group & (same_segment | is_prefix[:, None, :])

    flat = torch.tensor([r * width + c for r, cols in columns for c in cols], dtype=torch.long)
    flat_columns = list(flat.to(device).split([len(cols) for _, cols in columns]))
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=mask[:, None],
        columns=flat_columns,
        real_tokens=sum(len(r.tokens) for r in rows),
    )
