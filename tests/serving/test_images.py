"""Image files decode exactly as training and evaluation load them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oaml.data.imglist import load_image
from oaml.data.transforms import build_transform
from oaml.models.factory import ModelSpec
from oaml.serving.images import ImageInputError, decode_image


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("L", (28, 28)), ("RGB", (50, 70, 3)), ("RGBA", (9, 9, 4)), ("I;16", (40, 30))],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_decoding_equals_the_training_transform(tmp_path, mode, shape, channels):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, shape, dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    path = tmp_path / "x.png"
    img.save(path)
    spec = ModelSpec("resnet18_32x32", 10, in_chans=channels, input_size=28)
    expected = build_transform(spec)(load_image(path, "L" if channels == 1 else "RGB")).numpy()
    decoded = decode_image(path.read_bytes(), 28, channels)
    assert decoded.shape == (28, 28, channels) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected.transpose(1, 2, 0))


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ImageInputError, match="a.txt: not an image"):
        decode_image(b"hello", 28, 1, "a.txt")
    png = tmp_path / "t.png"
    Image.new("L", (64, 64)).save(png)
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        decode_image(png.read_bytes()[:60], 28, 1, "t.png")
    with pytest.raises(ImageInputError, match="exceeds the limit"):
        decode_image(png.read_bytes(), 28, 1, "t.png", max_pixels=1000)
    with pytest.raises(ImageInputError, match="does not exist"):
        decode_image(tmp_path / "missing.png", 28, 1, "missing.png")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_decoding_resizes_with_the_recorded_interpolation(tmp_path, interpolation):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    path = tmp_path / "x.png"
    img.save(path)
    spec = ModelSpec("resnet18_32x32", 10, input_size=28, interpolation=interpolation)
    expected = build_transform(spec)(load_image(path, "RGB")).numpy()
    decoded = decode_image(path.read_bytes(), 28, 3, interpolation=interpolation)
    np.testing.assert_array_equal(decoded, expected.transpose(1, 2, 0))
    if interpolation != "bilinear":
        assert not np.array_equal(decoded, decode_image(path.read_bytes(), 28, 3))


@pytest.mark.parametrize(
    ("mode", "transparency", "per_pixel"),
    [("L", False, 5), ("RGB", False, 8), ("P", False, 13), ("L", True, 16), ("I;16", False, 27)],
)
def test_the_header_prices_a_decode_by_mode_before_decoding(mode, transparency, per_pixel):
    import io

    from oaml.serving.images import image_header

    img = Image.new(mode, (300, 200))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", **({"transparency": 0} if transparency else {}))
    header = image_header(buffer.getvalue(), "x.png")
    assert (header.width, header.height, header.mode) == (300, 200, mode)
    assert header.decode_bytes == 300 * 200 * per_pixel
