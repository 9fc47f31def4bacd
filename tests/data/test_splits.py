"""Group-aware stratified splits: fractions per class, whole groups, determinism."""

import re
from collections import Counter

import pytest

from oaml.data.splits import assign_splits, group_key, groups_of

FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.2, "calibration": 0.1}


def test_singletons_split_each_class_by_the_fractions():
    labels = [0] * 100 + [1] * 50
    splits = assign_splits(labels, list(range(150)), FRACTIONS, seed=3)
    for label, total in ((0, 100), (1, 50)):
        counts = Counter(s for s, y in zip(splits, labels, strict=True) if y == label)
        for name, share in FRACTIONS.items():
            assert abs(counts[name] - share * total) <= 1, (label, name, counts)


def test_groups_never_straddle_and_the_seed_decides():
    labels = [i % 3 for i in range(300)]
    groups = [i // 5 for i in range(300)]  # 60 groups of 5
    first = assign_splits(labels, groups, FRACTIONS, seed=0)
    for g in set(groups):
        assert len({first[i] for i in range(300) if groups[i] == g}) == 1
    assert first == assign_splits(labels, groups, FRACTIONS, seed=0)
    assert first != assign_splits(labels, groups, FRACTIONS, seed=1)
    assert set(first) == set(FRACTIONS)


def test_a_small_class_reaches_every_split_first():
    splits = assign_splits([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], list(range(10)), FRACTIONS, seed=0)
    assert set(splits[:4]) == set(FRACTIONS)


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits([0], [0], {"train": 0.5, "val": 0.1}, seed=0)


def test_identical_content_or_key_joins_a_group():
    keys = ["a", "a", None, None, "b"]
    hashes = ["h1", "h2", "h2", "h3", "h4"]
    groups = groups_of(keys, hashes)
    assert groups[0] == groups[1] == groups[2]  # key a, then content h2
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_group_key_takes_the_first_capture_group():
    pattern = re.compile(r"^([a-z]+)-")
    assert group_key("archer-attack-1.png", pattern) == "archer"
    assert group_key("README", pattern) is None
    assert group_key("x.png", re.compile(r"\w")) == "x"
    assert group_key("x.png", None) is None


def test_a_stratified_subset_keeps_a_class_of_one_image():
    from oaml.data.datasets import stratified_subset
    from oaml.data.imglist import ImglistEntry

    entries = [ImglistEntry(f"{i}.png", 0) for i in range(30)] + [ImglistEntry("x.png", 1)]
    subset = stratified_subset(entries, 16, seed=0)
    assert len(subset) == 16 and len({e.path for e in subset}) == 16
    assert subset == stratified_subset(entries, 16, seed=0)
