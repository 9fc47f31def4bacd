"""Exact request bodies for the server's tests: OIP JSON, multipart forms, PNG files whose
decoded size dwarfs their size on the wire."""

from __future__ import annotations

import struct
import zlib

import numpy as np

BOUNDARY = "oaml-test-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def infer_json(images: np.ndarray) -> dict:
    """An OIP v2 JSON infer request for uint8 NHWC `images`."""
    return {"inputs": [{"name": "images", "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}]}  # fmt: skip


def multipart(files: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body with each (name, data) in the form field 'files'."""
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    )
    return parts + f"--{boundary}--\r\n".encode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A valid all-black PNG, compressed row by row (never held decoded in this process):
    a few KB for millions of pixels. color_type 0 is grey, 3 palette (with a 2-entry PLTE)."""
    row = b"\0" + bytes((width * bit_depth + 7) // 8)  # filter byte, then the packed pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    palette = _chunk(b"PLTE", bytes(6)) if color_type == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + palette
        + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    )  # fmt: skip
