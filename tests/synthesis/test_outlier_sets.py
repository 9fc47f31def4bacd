"""Outlier sets as training reads them: memory-mapped, equal to the shards, joined once."""

import os

import numpy as np
import pytest

from oaml.synthesis.outlier_sets import load_outliers, mapped_outliers
from oaml.synthesis.shards import ShardWriter


def _run(folder, latents: bool):
    rng = np.random.default_rng(0)
    kinds = ("images", "latents") if latents else ("images",)
    writer = ShardWriter(folder, kinds)
    for number, _ in writer.pending(range(3), desc="shards"):
        arrays = {"images": rng.integers(0, 255, (4, 6, 6, 3), dtype=np.uint8)}
        if latents:
            arrays["latents"] = rng.standard_normal((4, 2, 3, 3)).astype(np.float16)
        writer.write(number, arrays)
    writer.finish("test", count=12)
    return folder


@pytest.mark.parametrize("latents", [False, True])
def test_mapped_outliers_equal_the_shards_and_are_joined_once(tmp_path, latents):
    folder = _run(tmp_path / "run", latents)
    plain, mapped = load_outliers(folder), mapped_outliers(folder)
    assert isinstance(mapped.images, np.memmap) and mapped.images.shape == (12, 6, 6, 3)
    np.testing.assert_array_equal(mapped.images, plain.images)
    if latents:
        assert mapped.latents.dtype == np.float32
        np.testing.assert_array_equal(mapped.latents, plain.latents)
    else:
        assert mapped.latents is None
    joined = sorted(p for p in os.listdir(folder) if p.startswith(".mapped-"))
    assert len(joined) == (2 if latents else 1)
    stamp = os.stat(folder / joined[0]).st_mtime_ns
    mapped_outliers(folder)  # the second read maps the joined file, it does not rewrite it
    assert os.stat(folder / joined[0]).st_mtime_ns == stamp
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]
