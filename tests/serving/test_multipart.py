"""/v1/score's multipart parsing over the in-memory body: files as views, refusals as 400s."""

from __future__ import annotations

import pytest

from oaml.serving.multipart import file_parts
from oaml.serving.oip import OipError
from tests.serving.bodies import BOUNDARY, MULTIPART, multipart

TYPE = MULTIPART["content-type"]


def test_files_come_back_in_order_as_views_of_the_body():
    body = bytearray(multipart([("a.png", b"first"), ("b.png", b"\r\n--oaml-x\r\n second")]))
    parts = file_parts(TYPE, body, max_files=8)
    assert [(p.filename, bytes(p.data)) for p in parts] == [
        ("a.png", b"first"),
        ("b.png", b"\r\n--oaml-x\r\n second"),  # boundary-like bytes inside a file survive
    ]
    assert parts[0].data.obj is body  # no copy of the upload


def test_other_fields_are_ignored_and_a_file_without_name_keeps_none():
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename=""\r\n\r\n'
        f"x\r\n--{BOUNDARY}--\r\n"
    ).encode()
    [part] = file_parts(TYPE, body, max_files=8)
    assert part.filename is None and bytes(part.data) == b"x"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"{}", "multipart/form-data"),
        ("multipart/form-data", b"", "no boundary"),
        (TYPE, multipart([("a.png", b"x")])[:-20], "incomplete"),
        (TYPE, b"--oaml-test-boundary\r\nno colon here\r\n\r\n", "malformed"),
        (TYPE, multipart([]), "one or more image files"),
        (TYPE, multipart([("a.png", b"x")] * 3), "at most 2 files"),
        (TYPE, multipart([("n" * 5000, b"x")]), "malformed"),  # a header line over 4 KiB
    ],
)
def test_bad_bodies_are_refused_by_name(content_type, body, message):
    with pytest.raises(OipError, match=message) as refused:
        file_parts(content_type, body, max_files=2)
    assert refused.value.status == 400


def test_a_text_value_in_the_files_field_is_refused():
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"\r\n\r\nnot a file\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode()
    with pytest.raises(OipError, match="must hold files"):
        file_parts(TYPE, body, max_files=2)
