"""Brute-force per-request metrics: plain Python loops, no numpy tricks, no shared code.

Each function takes one group's fused scores and labels (Python floats) and follows the
definitions of DESIGN.md literally, so the kernel can be checked against it on any log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def auc_pairs(fused: Sequence[float], positive: Sequence[bool]) -> float | None:
    """AUC over every (positive, negative) pair, a tie counting 1/2; None without both classes."""
    pos = [f for f, p in zip(fused, positive) if p]
    neg = [f for f, p in zip(fused, positive) if not p]
    if not pos or not neg:
        return None
    wins = 0.0
    for a in pos:
        for b in neg:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(pos) * len(neg))


def auc_blocks(fused: Sequence[float], positive: Sequence[bool]) -> float | None:
    """The same AUC by walking tie blocks in ascending order (for requests too big for pairs)."""
    n_pos = sum(1 for p in positive if p)
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rows = sorted(zip(fused, positive))
    wins, negatives_below, i = 0.0, 0, 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][0] == rows[i][0]:
            j += 1
        block_pos = sum(1 for _, p in rows[i:j] if p)
        block_neg = (j - i) - block_pos
        wins += block_pos * (negatives_below + 0.5 * block_neg)
        negatives_below += block_neg
        i = j
    return wins / (n_pos * n_neg)


def _tie_blocks_desc(fused: Sequence[float], gains: Sequence[float]) -> list[tuple[int, int, float]]:
    """(first position, last position + 1, mean gain) of each tie block, best first."""
    rows = sorted(zip(fused, gains), key=lambda r: -r[0])
    blocks, i = [], 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j][0] == rows[i][0]:
            j += 1
        blocks.append((i, j, sum(g for _, g in rows[i:j]) / (j - i)))
        i = j
    return blocks


def dcg_tie_averaged(fused: Sequence[float], gains: Sequence[float], k: int) -> float:
    """sklearn's ndcg_score(ignore_ties=False) DCG: each tie block shares its mean gain."""
    total = 0.0
    for start, stop, mean_gain in _tie_blocks_desc(fused, gains):
        for position in range(start, min(stop, k)):
            total += mean_gain / math.log2(position + 2)
    return total


def ndcg(fused: Sequence[float], gains: Sequence[float], k: int) -> float | None:
    """NDCG@k; None when the ideal DCG is 0 (the group does not count)."""
    ideal = sorted(gains, reverse=True)
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal[:k]))
    if idcg <= 0:
        return None
    return dcg_tie_averaged(fused, gains, k) / idcg


def top(fused: Sequence[float], labels: Sequence[float], k: int) -> float:
    """Sum of the labels in the first k slots, a tie block straddling slot k counted pro rata."""
    total = 0.0
    for start, stop, mean_label in _tie_blocks_desc(fused, labels):
        total += mean_label * max(0, min(stop, k) - start)
    return total


def grouped(fused: Sequence[float], labels: Sequence[float], offsets: Sequence[int], *,
            metric: str, k: int = 0, threshold: float = 0.0, log1p_gain: bool = False
            ) -> tuple[float, int]:
    """(value, groups used) of one metric over the groups given by ``offsets``.

    gauc is weighted by group size; ndcg and top are plain means. NaN when no group counts.
    """
    weighted, weight, used = 0.0, 0.0, 0
    for g in range(len(offsets) - 1):
        f = [float(x) for x in fused[offsets[g]:offsets[g + 1]]]
        y = [float(x) for x in labels[offsets[g]:offsets[g + 1]]]
        if metric == "gauc":
            positive = [v > threshold for v in y]
            value = auc_pairs(f, positive) if len(f) <= 300 else auc_blocks(f, positive)
            w = len(f)
        elif metric == "ndcg":
            value = ndcg(f, [math.log1p(v) if log1p_gain else v for v in y], k)
            w = 1
        else:
            value, w = top(f, y, k), 1
        if value is not None:
            weighted += w * value
            weight += w
            used += 1
    return (weighted / weight if weight else math.nan), used
