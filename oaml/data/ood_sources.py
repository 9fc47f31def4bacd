"""Real out-of-distribution images that ship inside scikit-learn and scikit-image.

Each source returns uint8 arrays at the benchmark's size: grayscale (H, W) by default, (H, W, 3)
with `channels=3` (colour pictures keep their colour, grey ones are repeated). Test and
validation sets draw on disjoint source images, so tuning on the OOD validation set never sees a
test image.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from oaml import imaging

# Test 'photos' and the OOD validation set come from different bundled photographs.
PHOTO_TEST_SOURCES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field", "motorcycle",
)  # fmt: skip
PHOTO_VAL_SOURCES = (
    "moon", "page", "text", "clock", "coins", "cell", "immunohistochemistry", "microaneurysms",
    "retina", "horse",
)  # fmt: skip
TEXTURE_SOURCES = ("brick", "grass", "gravel")


def skimage_image(name: str, channels: int = 1) -> np.ndarray:
    """A bundled scikit-image picture as uint8 pixels with `channels` (never downloads)."""
    from skimage import data

    loaders: dict[str, Callable[[], np.ndarray]] = {
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "clock": data.clock,
    }
    image = loaders[name]() if name in loaders else getattr(data, name)()
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return with_channels(image[..., :3] if image.ndim == 3 else image, channels)


def with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) pixels as (H, W) for one channel, (H, W, 3) for three."""
    image = image if image.ndim == 3 else image[:, :, None]
    converted = imaging.to_channels(image, channels)
    return converted[:, :, 0] if channels == 1 else converted


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased (Lanczos) resize of a uint8 image to size x size."""
    return imaging.resize(np.asarray(image, dtype=np.uint8), size, "lanczos")


def random_crops(
    image: np.ndarray, count: int, rng: np.random.Generator, size: int, scale=(0.08, 0.4)
) -> list[np.ndarray]:
    """`count` square crops whose side is a random fraction `scale` of the shorter image side
    (at least `size` where the picture allows, else the whole shorter side, scaled up)."""
    height, width = image.shape[:2]
    short = min(height, width)
    crops = []
    for _ in range(count):
        side = min(short, max(size, round(short * rng.uniform(*scale))))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crops.append(resize(image[top : top + side, left : left + side], size))
    return crops


def crops_of(
    names: tuple[str, ...], total: int, size: int, seed: int, scale=(0.08, 0.4), channels: int = 1
) -> list[np.ndarray]:
    """`total` crops spread evenly over the named scikit-image pictures, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    per = [total // len(names) + (i < total % len(names)) for i in range(len(names))]
    crops: list[np.ndarray] = []
    for name, count in zip(names, per, strict=True):
        crops.extend(random_crops(skimage_image(name, channels), count, rng, size, scale))
    return crops


def digits(size: int, channels: int = 1) -> list[np.ndarray]:
    """scikit-learn's 1,797 bundled handwritten digits (8x8, 0..16), bright ink on black."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    return [
        with_channels(resize((img * (255.0 / 16.0)).round().astype(np.uint8), size), channels)
        for img in images
    ]


def faces(size: int, channels: int = 1) -> list[np.ndarray]:
    """scikit-image's 200 bundled LFW face crops (25x25)."""
    from skimage import data

    return [
        with_channels(resize((img * 255).round().astype(np.uint8), size), channels)
        for img in data.lfw_subset()
    ]


# Real OOD pictures from Debian packages, where installed (`make setup` installs them):
# public-domain clip art (openclipart-png) and glyphs of many scripts (fonts-noto-core, SIL OFL).
CLIPART_DIR = Path("/usr/share/openclipart/png")
NOTO_DIR = Path("/usr/share/fonts/truetype/noto")
PACKAGED = {"clipart": ("openclipart-png", CLIPART_DIR), "glyphs": ("fonts-noto-core", NOTO_DIR)}


def packaged_sets() -> dict[str, str]:
    """The packaged OOD sets this machine has (name -> Debian package)."""
    return {name: pkg for name, (pkg, folder) in PACKAGED.items() if folder.is_dir()}


@cache
def clipart_files() -> tuple[Path, ...]:
    # Drawings a few hundred pixels wide; the package's largest (168 Mpx) cost seconds each.
    return tuple(sorted(p for p in CLIPART_DIR.rglob("*.png") if p.stat().st_size < 512 << 10))


@cache
def _script_codes(font: Path) -> tuple[int, ...]:
    """The code points a font draws past Latin and IPA (its other scripts)."""
    from fontTools.ttLib import TTFont

    with TTFont(font, lazy=True) as opened:
        return tuple(sorted(c for c in opened.getBestCmap() if c > 0x2FF))


def clipart(size: int, channels: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` openclipart drawings (seeded, over every category), transparency on black."""
    files = clipart_files()
    if not files:
        raise FileNotFoundError(f"no clip art under {CLIPART_DIR}: apt-get install openclipart-png")
    chosen = np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False)
    images = []
    for index in np.sort(chosen):
        with Image.open(files[index]) as img:
            img.load()
            rgb = np.asarray(imaging.convert_mode(img, "RGB"))
        images.append(with_channels(resize(rgb, size), channels))
    return images


def glyphs(size: int, channels: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` single characters of non-Latin scripts in Noto fonts, white on black, centred."""
    from PIL import ImageDraw, ImageFont

    fonts = sorted(NOTO_DIR.glob("NotoSans*-Regular.ttf"))
    if not fonts:
        raise FileNotFoundError(f"no Noto fonts under {NOTO_DIR}: apt-get install fonts-noto-core")
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    canvas = size * 2
    while len(images) < count:
        path = fonts[int(rng.integers(len(fonts)))]
        codes = _script_codes(path)
        if not codes:
            continue
        char = chr(codes[int(rng.integers(len(codes)))])
        pil_font = ImageFont.truetype(str(path), int(canvas * 0.6))
        page = Image.new("L", (canvas, canvas))
        ImageDraw.Draw(page).text(
            (canvas / 2, canvas / 2), char, fill=255, font=pil_font, anchor="mm"
        )
        box = page.getbbox()
        if box is None:
            continue  # a control or combining code point with no ink
        ink = np.asarray(page.crop(box))
        side = max(ink.shape) + 4
        square = np.zeros((side, side), np.uint8)
        top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
        square[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
        images.append(with_channels(resize(square, size), channels))
    return images


def packaged_images(size: int, channels: int, count: int, seed: int) -> dict[str, list[np.ndarray]]:
    """`count` images of each packaged set this machine has (clipart, glyphs), each seeded from
    `seed` plus the set's place in PACKAGED, so one set's pixels do not depend on the other's."""
    makers = {"clipart": clipart, "glyphs": glyphs}
    installed = packaged_sets()
    return {
        name: makers[name](size, channels, count, seed + offset)
        for offset, name in enumerate(PACKAGED, start=4)
        if name in installed
    }


def bundled_sets(
    size: int, seed: int, crops: dict[str, int], channels: int = 1
) -> dict[str, list[np.ndarray]]:
    """The real OOD sets bundled with scikit-learn and scikit-image at one size: digits and
    faces (all of them), and `crops[name]` crops for textures, photos and the OOD validation
    set ("val", from other photographs), each seeded from `seed`."""
    return {
        "digits": digits(size, channels),
        "textures": crops_of(TEXTURE_SOURCES, crops["textures"], size, seed + 1, channels=channels),
        "photos": crops_of(PHOTO_TEST_SOURCES, crops["photos"], size, seed + 2, channels=channels),
        "faces": faces(size, channels),
        "val": crops_of(PHOTO_VAL_SOURCES, crops["val"], size, seed + 3, channels=channels),
    }
