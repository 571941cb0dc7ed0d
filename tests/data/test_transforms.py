"""Transforms against the reference preprocessing goldens (README section 2)."""
import random

import numpy as np
import pytest
import torch
from helpers import load_golden
from PIL import Image
from yacs.config import CfgNode as CN

from glip.data import transforms as T
from glip.structures.bounding_box import BoxList

MEAN = [103.530, 116.280, 123.675]
STD = [57.375, 57.120, 58.395]


@pytest.fixture(scope="module")
def astronaut():
    return load_golden("infer_astronaut_320.pt")


@pytest.fixture(scope="module")
def chelsea():
    return load_golden("infer_chelsea_800.pt")


def _cfg(mult=()):
    cfg = CN()
    cfg.INPUT = CN(dict(MIN_SIZE_TRAIN=(800,), MAX_SIZE_TRAIN=1333, MIN_SIZE_TEST=320, MAX_SIZE_TEST=512,
                        PIXEL_MEAN=MEAN, PIXEL_STD=STD, TO_BGR255=True, FORMAT="", FIX_RES=False))
    cfg.AUGMENT = CN(dict(MULT_MIN_SIZE_TRAIN=mult, FLIP_PROB_TRAIN=0.5))
    return cfg


@pytest.mark.parametrize("wh,min_size,max_size,expected_hw", [
    ((512, 512), 320, 512, (320, 320)),
    ((512, 512), 800, 1333, (800, 800)),
    ((451, 300), 320, 512, (320, 481)),
    ((451, 300), 800, 1333, (800, 1202)),
    ((1000, 200), 800, 1333, (267, 1335)),   # capped: size = round(1333*200/1000) = 267, long = int(267*5) > max
    ((300, 320), 320, 1333, (341, 320)),     # short w=300 -> 320, h = int(320*320/300)
    ((320, 480), 320, 1333, (480, 320)),     # short side already 320 -> unchanged
])
def test_get_size(wh, min_size, max_size, expected_hw):
    assert T.Resize(min_size, max_size).get_size(wh) == expected_hw


def test_resize_pixels_and_normalised_input_exact(astronaut):
    orig = astronaut["image"]["orig_rgb_uint8"].numpy()
    ref = astronaut["size320"]
    transform = T.build_transforms(_cfg(), is_train=False)
    image = transform(Image.fromarray(orig, "RGB"))
    resized = T.Resize(320, 512)(Image.fromarray(orig, "RGB"))[0]
    assert np.array_equal(np.asarray(resized), ref["resized_rgb_uint8"].numpy())
    torch.testing.assert_close(image[None], ref["input_tensor"], rtol=0, atol=0)
    # from the stored resized pixels alone, ToTensor + Normalize reproduce the input exactly
    tail = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD, "bgr255")])
    image2 = tail(Image.fromarray(ref["resized_rgb_uint8"].numpy(), "RGB"))
    torch.testing.assert_close(image2[None], ref["input_tensor"], rtol=0, atol=0)


def test_chelsea_800_resize(chelsea):
    orig = chelsea["image"]["orig_rgb_uint8"].numpy()
    ref = chelsea["size800"]
    resized, _ = T.Resize(800, 1333)(Image.fromarray(orig, "RGB"))
    assert (resized.size[1], resized.size[0]) == tuple(ref["image_size_hw"])
    assert np.array_equal(np.asarray(resized), ref["resized_rgb_uint8"].numpy())


def test_resize_moves_boxes():
    image = Image.new("RGB", (200, 100))
    target = BoxList(torch.tensor([[10.0, 20.0, 50.0, 60.0]]), (200, 100))
    image, target = T.Resize(50, 1000)(image, target)
    assert image.size == (100, 50)
    torch.testing.assert_close(target.bbox, torch.tensor([[5.0, 10.0, 25.0, 30.0]]))


def test_flip_boxes_and_caption():
    image = Image.fromarray(np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3), "RGB")
    target = BoxList(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), (4, 2))
    target.add_field("caption", T.Caption("the left dog is right of the cat"))
    flipped, out = T.RandomHorizontalFlip(1.0)(image, target)
    assert np.array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])
    torch.testing.assert_close(out.bbox, torch.tensor([[2.0, 0.0, 3.0, 1.0]]))  # x -> W - x - 1
    assert out.get_field("caption").text == "the left dog is right of the cat"  # as the reference: unchanged
    _, swapped = T.RandomHorizontalFlip(1.0, swap_left_right=True)(image, target)
    assert swapped.get_field("caption").text == "the right dog is left of the cat"
    _, same = T.RandomHorizontalFlip(0.0, swap_left_right=True)(image, target)
    assert same.get_field("caption").text == "the left dog is right of the cat"


def test_build_train_multiscale():
    random.seed(0)
    transform = T.build_transforms(_cfg(mult=(48, 56, 64)), is_train=True)
    assert transform.transforms[0].min_size == (48, 56, 64)
    assert transform.transforms[1].prob == 0.5
    sizes = {transform(Image.new("RGB", (80, 60))).shape[1] for _ in range(30)}
    assert sizes == {48, 56, 64}
    assert T.build_transforms(_cfg(), is_train=True).transforms[0].min_size == (800,)
    assert T.build_transforms(_cfg(), is_train=False).transforms[1].prob == 0.0
