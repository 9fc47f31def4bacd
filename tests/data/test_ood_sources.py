"""The real OOD pictures at any size a user's data asks for."""

from __future__ import annotations

import numpy as np
import pytest

from oaml.data import ood_sources


@pytest.mark.parametrize("size,channels", [(28, 1), (224, 3)])
def test_bundled_sets_at_any_size_even_above_the_smallest_picture(size, channels):
    """224 px is the import's default for photos; scikit-image's microaneurysms is 102 px."""
    assert min(ood_sources.skimage_image("microaneurysms").shape[:2]) < 224
    sets = ood_sources.bundled_sets(size, 0, {"textures": 6, "photos": 7, "val": 10}, channels)
    assert {name: len(images) for name, images in sets.items()} == {
        "digits": 1797, "textures": 6, "photos": 7, "faces": 200, "val": 10,
    }  # fmt: skip
    shape = (size, size) if channels == 1 else (size, size, channels)
    for images in sets.values():
        assert {im.shape for im in images} == {shape}
        assert all(im.dtype == np.uint8 for im in images)
        assert all(im.std() > 0 for im in images[:10])  # pictures, not blank fills
