"""Image files to the detector's input, exactly as training and evaluation load them.

Same mode conversion and the same resize as training's data path (oaml.imaging.convert_mode and
oaml.imaging.resize, at the interpolation the detector's metadata records), so a file scored by
the server or `oaml score` gets the numbers `oaml evaluate` gives it. PIL and numpy only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
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


# Peak bytes per pixel that decoding and converting an image of each mode costs (measured here
# on 4096 x 4096 images through decode_image): palettes and alpha are composited as RGBA, high
# bit depths rescaled in float64. Unknown modes count as the dearest.
DECODE_BYTES_PER_PIXEL = {
    "1": 5, "L": 5, "RGB": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "CMYK": 9, "P": 13,
    "LA": 16, "PA": 16, "RGBA": 16, "RGBa": 16, "La": 16, "I;16": 27, "I;16B": 27,
    "I;16L": 27, "I;16N": 27, "I": 29, "F": 29,
}  # fmt: skip
DEAREST = max(DECODE_BYTES_PER_PIXEL.values())


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read before any pixel is decoded."""

    width: int
    height: int
    mode: str
    transparency: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """About the most memory decoding this image to a model input takes at once."""
        per_pixel = DECODE_BYTES_PER_PIXEL.get(self.mode, DEAREST)
        if self.transparency:  # composited as RGBA, whatever the mode
            per_pixel = max(per_pixel, DECODE_BYTES_PER_PIXEL["RGBA"])
        return self.pixels * per_pixel


def image_header(data: bytes | memoryview, name: str = "image") -> ImageHeader:
    """Size and mode from the file's header alone (nothing decoded), or ImageInputError: lets a
    server refuse or schedule a request by what its images will cost before decoding any."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            return ImageHeader(*img.size, img.mode, "transparency" in img.info)
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except Exception:  # unreadable headers: the refusal decode_image gives, before decoding
        raise ImageInputError(
            f"{name}: not an image file of a supported format ({', '.join(FORMATS)})"
        ) from None


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
