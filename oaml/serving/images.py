"""Image files to the detector's input, exactly as training and evaluation load them.

Same mode conversion and the same resize as training's data path (oaml.imaging.convert_mode and
oaml.imaging.resize, at the interpolation the detector's metadata records), so a file scored by
the server or `oaml score` gets the numbers `oaml evaluate` gives it. PIL and numpy only.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oaml.contract import DEFAULT_INTERPOLATION
from oaml.imaging import convert_mode, mode_for, resize

# Far above any real photo this detector sees, far below a decompression bomb's size.
DEFAULT_MAX_PIXELS = 40_000_000
# Raster formats only: PIL would hand EPS/PS to Ghostscript, an external program. `oaml score`
# reads a user's own files in any of these.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# What the server accepts from the outside: formats whose headers are small and whose decoders
# are C code working in bounded passes. Not TIFF (Pillow builds one Python object per strip
# offset before any pixel budget applies), BMP (RLE decodes in Python) or PPM (Python too).
SERVED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# A progressive JPEG decodes its coefficients once per scan: encoders write about 10 scans (a
# thumbnail in the EXIF adds its own), a crafted file thousands. Counted before decoding.
MAX_JPEG_SCANS = 32
_SOS = re.compile(rb"\xff\xda")  # start of scan: never inside entropy-coded data (0xFF00 there)


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


def _unsupported(name: str, formats: tuple[str, ...]) -> ImageInputError:
    supported = ", ".join(formats)
    return ImageInputError(f"{name}: not an image file of a supported format ({supported})")


def check_scans(data: bytes | memoryview, name: str = "image") -> None:
    """ImageInputError when a JPEG holds more scans than MAX_JPEG_SCANS (decoding time grows
    with them, and nothing else bounds it); image_header checks it before any decode."""
    scans = sum(1 for _ in _SOS.finditer(data))
    if scans > MAX_JPEG_SCANS:
        raise ImageInputError(
            f"{name}: a JPEG of {scans} scans, over the limit of {MAX_JPEG_SCANS} (encoders "
            "write about 10): re-encode it"
        )


def image_header(
    data: bytes | memoryview, name: str = "image", formats: tuple[str, ...] = FORMATS
) -> ImageHeader:
    """Size and mode from the file's header alone (nothing decoded), or ImageInputError: lets a
    server refuse or schedule a request by what its images will cost before decoding any."""
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            header = ImageHeader(*img.size, img.mode, "transparency" in img.info)
            is_jpeg = img.format == "JPEG"
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except Exception:  # unreadable headers: the refusal decode_image gives, before decoding
        raise _unsupported(name, formats) from None
    if is_jpeg:
        check_scans(data, name)
    return header


def decode_image(
    data: bytes | memoryview | Path,
    size: int,
    channels: int,
    name: str = "image",
    max_pixels: int = 0,
    interpolation: str = DEFAULT_INTERPOLATION,
    formats: tuple[str, ...] = FORMATS,
) -> np.ndarray:
    """Bytes or a file -> uint8 [size, size, channels] (resized with `interpolation`, the one
    the detector records), or ImageInputError naming `name`; only `formats` are opened."""
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        with Image.open(source, formats=formats) as img:
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
        raise _unsupported(name, formats) from None
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"{name}: refused as a decompression bomb ({exc})") from None
    except Exception as exc:  # decoders raise many types (OSError, ValueError, SyntaxError...)
        raise ImageInputError(f"{name}: corrupt or truncated image ({exc})") from None
    array = np.asarray(resize(img, size, interpolation), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array
