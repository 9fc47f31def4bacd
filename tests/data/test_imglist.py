import numpy as np
import pytest
from PIL import Image

from oaml.data.imglist import ImglistDataset, ImglistError, parse_imglist


def _png(path, value=128, size=(5, 7), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).convert(mode).save(path)


def test_paths_with_spaces_comments_and_blank_lines(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# header\n\nmy dir/a photo.png 3\nplain.png -1\n  padded.png 0  \n")
    entries = parse_imglist(listing)
    assert [(e.path, e.label) for e in entries] == [
        ("my dir/a photo.png", 3),
        ("plain.png", -1),
        ("padded.png", 0),
    ]


def test_bad_label_names_file_and_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 1\nb.png cat\n")
    with pytest.raises(ImglistError, match=r"list\.txt:2: label 'cat' is not an integer"):
        parse_imglist(listing)


def test_line_without_label_is_rejected(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("lonely.png\n")
    with pytest.raises(ImglistError, match=r"list\.txt:1: expected '<path> <label>'"):
        parse_imglist(listing)


def test_missing_imglist_is_named(tmp_path):
    with pytest.raises(ImglistError, match="does not exist"):
        parse_imglist(tmp_path / "nope.txt")


def test_missing_images_are_counted_and_named(tmp_path):
    _png(tmp_path / "img" / "here.png")
    listing = tmp_path / "list.txt"
    listing.write_text("here.png 0\ngone one.png 1\n")
    with pytest.raises(ImglistError, match=r"1 of 2 images .* missing .*'gone one\.png'"):
        ImglistDataset(listing, tmp_path / "img")


def test_images_of_any_mode_are_converted(tmp_path):
    _png(tmp_path / "img" / "rgb.png", mode="RGB")
    _png(tmp_path / "img" / "gray.png", mode="L")
    listing = tmp_path / "list.txt"
    listing.write_text("rgb.png 0\ngray.png 1\n")
    gray = ImglistDataset(listing, tmp_path / "img", mode="L")
    rgb = ImglistDataset(listing, tmp_path / "img", mode="RGB")
    assert gray[0][0].mode == "L" and rgb[1][0].mode == "RGB"
    assert gray[1][1] == 1


def test_corrupt_image_gets_a_clear_error(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    listing = tmp_path / "list.txt"
    listing.write_text("bad.png 0\n")
    with pytest.raises(ImglistError, match=r"bad\.png cannot be read"):
        ImglistDataset(listing, tmp_path / "img")[0]


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.array([[0, 1000], [30000, 65535]], np.uint16)).save(tmp_path / "img/d.png")
    (tmp_path / "list.txt").write_text("d.png 0\n")
    image, _ = ImglistDataset(tmp_path / "list.txt", tmp_path / "img", mode="L")[0]
    assert np.asarray(image).tolist() == [[0, 4], [117, 255]]


def test_transparency_is_composited_on_black(tmp_path):
    (tmp_path / "img").mkdir()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255  # one opaque pixel, the rest fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "img/t.png")
    (tmp_path / "list.txt").write_text("t.png 0\n")
    for mode in ("L", "RGB"):
        image, _ = ImglistDataset(tmp_path / "list.txt", tmp_path / "img", mode=mode)[0]
        pixels = np.asarray(image).reshape(4, -1)[:, 0].tolist()
        assert pixels == [200, 0, 0, 0]
