"""Image files to the detector's input, exactly as training and evaluation load them.

Same mode conversion and the same resize as training's data path (oaml.imaging.convert_mode and
oaml.imaging.resize, at the interpolation the detector's metadata records), so a file scored by
the server or `oaml score` gets the numbers `oaml evaluate` gives it. PIL and numpy only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oaml.contract import DEFAULT_INTERPOLATION
from oaml.imaging import convert_mode, mode_for, resize

# Far above any real photo this detector sees, far below a decompression bomb's size.
DEFAULT_MAX_PIXELS = 40_000_000
# Raster formats only: PIL would hand EPS/PS to Ghostscript, an external program.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


class ImageInputError(ValueError):
    """An input that is not a usable image; the message names it and what was wrong."""


def image_pixels(data: bytes | memoryview, name: str = "image") -> int:
    """Width x height from the file's header alone (nothing decoded), or ImageInputError: lets
    a server refuse a request whose images together are too large before decoding any."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except Exception:  # unreadable headers: the refusal decode_image gives, before decoding
        raise ImageInputError(
            f"{name}: not an image file of a supported format ({', '.join(FORMATS)})"
        ) from None
    return width * height


def decode_image(
    data: bytes | memoryview | Path,
    size: int,
    channels: int,
    name: str = "image",
    max_pixels: int = 0,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> np.ndarray:
    """Bytes or a file -> uint8 [size, size, channels] (resized with `interpolation`, the one
    the detector records), or ImageInputError naming `name`."""
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        with Image.open(source, formats=FORMATS) as img:
            width, height = img.size
            # Checked before decoding: the header is read, the pixels are not yet.
            if width * height > max_pixels:
                raise ImageInputError(
                    f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels}"
                )
            img.load()
            img = convert_mode(img, mode_for(channels))
    except ImageInputError:
        raise
    except FileNotFoundError:
        raise ImageInputError(f"{name}: file does not exist") from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"{name}: not an image file of a supported format ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # decoders raise many types (OSError, ValueError, SyntaxError...)
        raise ImageInputError(f"{name}: corrupt or truncated image ({exc})") from None
    array = np.asarray(resize(img, size, interpolation), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
