"""Seeded, stratified, group-aware splits: files that must stay together (one group-by key, or
identical content) land in one split, and each class is spread over the splits by the fractions.

Why hand-written: scikit-learn's StratifiedGroupKFold makes k equal folds, not fractions, and
its GroupShuffleSplit does not stratify. The greedy below places whole groups, largest first
(so the small ones can even out the counts), each into the split whose classes lack the most
relative to their targets; with singleton groups it is an exact stratified split up to rounding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test", "calibration")


class UnionFind:
    """Disjoint sets over 0..n-1 (path halving), to merge files into groups."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_key(name: str, pattern: re.Pattern[str] | None) -> str | None:
    """The group a file name belongs to: the pattern's first capture group (its whole match
    where it has none), or None where it does not match (the file is a group of its own)."""
    if pattern is None:
        return None
    found = pattern.search(name)
    if found is None:
        return None
    return found.group(1) if pattern.groups else found.group(0)


def groups_of(keys: Sequence[str | None], hashes: Sequence[str]) -> list[int]:
    """A group id per file: files sharing a group key or a content hash are one group."""
    sets = UnionFind(len(keys))
    first: dict[tuple[str, str], int] = {}
    for i, (key, digest) in enumerate(zip(keys, hashes, strict=True)):
        for tag in (("key", key), ("sha", digest)):
            if tag[1] is None:
                continue
            if tag in first:
                sets.union(first[tag], i)
            else:
                first[tag] = i
    return [sets.find(i) for i in range(len(keys))]


def assign_splits(
    labels: Sequence[int], groups: Sequence[int], fractions: dict[str, float], seed: int
) -> list[str]:
    """The split of each file (names of `fractions`, in its order): whole groups, stratified by
    label, deterministic in `seed`."""
    names = list(fractions)
    share = np.array([fractions[n] for n in names], dtype=np.float64)
    if (share < 0).any() or not np.isclose(share.sum(), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=1).astype(np.float64)
    target = share[:, None] * per_class[None, :]  # (splits, classes)
    have = np.zeros_like(target)
    order = list(members)
    np.random.default_rng(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the seeded order
    assigned = [""] * len(labels)
    for g in order:
        counts = np.bincount([labels[i] for i in members[g]], minlength=len(per_class))
        used = counts > 0
        # Relative lack of each split over the group's classes; only splits with a share.
        lack = ((target - have)[:, used] / np.maximum(target[:, used], 1e-9)) @ counts[used]
        lack[share == 0] = -np.inf
        best = int(np.argmax(lack))
        have[best] += counts
        for i in members[g]:
            assigned[i] = names[best]
    return assigned
