"""The image files of an in-memory multipart/form-data body, as zero-copy views.

The body is already read whole and bounded (guard.limit_body). Starlette's form parser would
copy each file again and spool those over 1 MiB to the pod's /tmp, so python-multipart's
streaming parser runs over the body itself and hands back slices of it. It also tells whether
the closing boundary arrived: a body cut off in transit must not be scored in part.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from oaml.serving.oip import OipError

FIELD = "files"


@dataclass
class FilePart:
    """One uploaded file: its form field, its name as sent (None if none) and its bytes."""

    field: str
    filename: str | None
    data: memoryview


class _Collector:
    """python-multipart callbacks that gather each part's headers and data slices."""

    def __init__(self, body: bytes, max_parts: int) -> None:
        self.body, self.view, self.max_parts = body, memoryview(body), max_parts
        self.parts: list[tuple[dict[bytes, bytes], list[memoryview]]] = []
        self.field, self.value, self.finished = b"", b"", False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._add("field", data, start, end),
            "on_header_value": lambda data, start, end: self._add("value", data, start, end),
            "on_header_end": self.header_end,
            "on_part_data": self.part_data,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise OipError(f"send at most {self.max_parts} files per request")
        self.parts.append(({}, []))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        # Offsets into the body itself are sliced without a copy; the parser's own look-behind
        # buffer (a boundary-like run it held back) is copied.
        self.parts[-1][1].append(
            self.view[start:end] if data is self.body else memoryview(data[start:end])
        )

    def _add(self, which: str, data, start: int, end: int) -> None:
        setattr(self, which, getattr(self, which) + bytes(data[start:end]))

    def header_end(self) -> None:
        self.parts[-1][0][self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def end(self) -> None:
        self.finished = True


def _data(slices: list[memoryview]) -> memoryview:
    if len(slices) == 1:
        return slices[0]
    return memoryview(b"".join(slices))  # the parser split a part: rare, one copy


def file_parts(content_type: str, body: bytes, max_files: int) -> list[FilePart]:
    """The files of form field 'files' in `body`; 400 for anything but a whole multipart body
    whose field 'files' holds files only."""
    media, params = parse_options_header(content_type)
    if media != b"multipart/form-data":
        raise OipError(f"send the images as multipart/form-data in the form field {FIELD!r}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise OipError("the multipart Content-Type has no boundary")
    collector = _Collector(body, max_parts=max_files)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except OipError:
        raise
    except FormParserError as exc:
        raise OipError(f"the multipart body is malformed: {str(exc)[:200]}") from None
    if not collector.finished:
        raise OipError("the multipart body is incomplete (no closing boundary): send it whole")
    files = []
    for headers, slices in collector.parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name", b"").decode("latin-1") != FIELD:
            continue
        if b"filename" not in disposition:
            raise OipError(f"form field {FIELD!r} must hold files, not text values")
        name = disposition[b"filename"].decode("utf-8", errors="replace")
        files.append(FilePart(FIELD, name or None, _data(slices)))
    if not files:
        raise OipError(f"send one or more image files in the multipart form field {FIELD!r}")
    return files
