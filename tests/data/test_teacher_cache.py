"""Frozen-teacher outputs are computed once, equal a direct forward pass, and are reused."""

import numpy as np
import torch
from PIL import Image

from oaml.data.teacher_cache import teacher_outputs
from oaml.data.transforms import build_transform
from oaml.models import ModelSpec
from oaml.models.checkpoint import save_checkpoint
from oaml.models.factory import build_model

SPEC = ModelSpec(
    arch="timm/vit_tiny_patch16_224",
    num_classes=3,
    in_chans=1,
    kwargs={"img_size": 16, "patch_size": 8, "depth": 1},
    input_size=16,
    mean=(0.3,),
    std=(0.3,),
)


def _images(folder, count=6):
    rng = np.random.default_rng(0)
    folder.mkdir()
    lines = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(f"{i}.png {i % 3}\n")
    (folder / "list.txt").write_text("".join(lines))
    return folder / "list.txt"


def test_outputs_match_the_model_and_second_call_reuses_the_cache(tmp_path):
    imglist = _images(tmp_path / "img")
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    checkpoint = save_checkpoint(tmp_path / "teacher.pt", model, SPEC)

    first = teacher_outputs(checkpoint, imglist, tmp_path / "img", tmp_path / "cache")
    assert not first.reused and first.logits.shape == (6, 3) and first.features.shape == (6, 192)
    image = build_transform(SPEC)(Image.open(tmp_path / "img" / "4.png").convert("L"))
    with torch.no_grad():
        logits, features = model(image[None], return_feature=True)
    np.testing.assert_allclose(first.logits[4], logits[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(first.features[4], features[0].numpy(), atol=1e-5)

    second = teacher_outputs(checkpoint, imglist, tmp_path / "img", tmp_path / "cache")
    assert second.reused and second.cache_file == first.cache_file
    assert np.array_equal(second.logits, first.logits) and second.paths == first.paths

    imglist.write_text(imglist.read_text() + "0.png 0\n")  # another list: another cache entry
    third = teacher_outputs(checkpoint, imglist, tmp_path / "img", tmp_path / "cache")
    assert not third.reused and third.logits.shape == (7, 3)
