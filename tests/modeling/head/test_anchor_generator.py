"""AnchorGenerator against the reference anchors golden (cell anchors, grid anchors, visibility)."""
import pytest
import torch
from yacs.config import CfgNode

from glip.modeling.head.anchor_generator import (AnchorGenerator, build_anchor_generator, generate_anchors,
                                                 octave_anchor_sizes)
from glip.structures.image_list import ImageList
from helpers import load_golden


def _glip_generator():
    return AnchorGenerator(octave_anchor_sizes((64, 128, 256, 512, 1024), 2.0, 1), (1.0,),
                           (8, 16, 32, 64, 128), straddle_thresh=0)


def test_state_dict_keys_match_manifest():
    sd = _glip_generator().state_dict()
    assert list(sd) == ["cell_anchors.{}".format(i) for i in range(5)]
    assert all(v.shape == (1, 4) and v.dtype == torch.float32 for v in sd.values())


def test_golden_anchors():
    g = load_golden("modules/anchors.pt")
    gen = _glip_generator()
    images = ImageList(torch.zeros(1, 3, *g["padded_hw"]), [g["image_size_hw"]])
    feats = [torch.zeros(1, 256, h, w) for h, w in g["feature_hw"]]
    (per_level,) = gen(images, feats)
    assert len(per_level) == 5
    for level, boxlist in enumerate(per_level):
        assert torch.equal(gen.cell_anchors[level], g["cell_anchors"][level])
        assert torch.equal(boxlist.bbox, g["anchors"][level])
        assert torch.equal(boxlist.get_field("visibility"), g["visibility"][level])
        assert tuple(boxlist.size) == tuple(g["anchor_boxlist_size_wh"])


def test_detectron_generate_anchors():
    # stride 16, sizes 128/256/512, ratios 0.5/1/2: base window (0, 0, 15, 15), centre 7.5; ratio 0.5 gives
    # w = round(sqrt(256 / 0.5)) = 23, h = round(11.5) = 12 (half to even), scaled x8 -> 184 x 96 -> x 7.5 -+ 91.5
    expected = torch.tensor([
        [-84.0, -40.0, 99.0, 55.0], [-176.0, -88.0, 191.0, 103.0], [-360.0, -184.0, 375.0, 199.0],
        [-56.0, -56.0, 71.0, 71.0], [-120.0, -120.0, 135.0, 135.0], [-248.0, -248.0, 263.0, 263.0],
        [-36.0, -80.0, 51.0, 95.0], [-80.0, -168.0, 95.0, 183.0], [-168.0, -344.0, 183.0, 359.0]],
        dtype=torch.float64)
    assert torch.equal(generate_anchors(16, (128, 256, 512), (0.5, 1.0, 2.0)), expected)


def test_tensor_input_and_octaves():
    gen = AnchorGenerator(octave_anchor_sizes((32, 64), 2.0, 2), (1.0,), (8, 16), straddle_thresh=-1)
    assert gen.num_anchors_per_location() == [2, 2]
    (per_level,) = gen(torch.zeros(1, 3, 16, 24), [torch.zeros(1, 4, 2, 3), torch.zeros(1, 4, 1, 2)])
    assert per_level[0].size == (24, 16) and len(per_level[0]) == 2 * 3 * 2 and len(per_level[1]) == 4
    assert per_level[0].get_field("visibility").all()
    # second anchor of a location: size 32 * sqrt(2) = 45.25 -> width 45.25 around centre 3.5
    assert per_level[0].bbox[1].tolist() == pytest.approx([3.5 - 22.127, 3.5 - 22.127, 3.5 + 22.127,
                                                           3.5 + 22.127], abs=1e-3)
    # location (y=0, x=1) is shifted by one stride in x
    assert torch.equal(per_level[0].bbox[2] - per_level[0].bbox[0], torch.tensor([8.0, 0, 8, 0]))
    assert octave_anchor_sizes((32,), 2.0, 2)[0] == pytest.approx((32.0, 32 * 2 ** 0.5))


def test_build_from_cfg():
    cfg = CfgNode({"MODEL": {"RPN": {
        "ANCHOR_SIZES": (64, 128, 256, 512, 1024), "ASPECT_RATIOS": (1.0,), "ANCHOR_STRIDE": (8, 16, 32, 64, 128),
        "STRADDLE_THRESH": 0, "OCTAVE": 2.0, "SCALES_PER_OCTAVE": 1, "USE_FPN": True}}})
    gen = build_anchor_generator(cfg)
    ref = _glip_generator()
    for a, b in zip(gen.cell_anchors, ref.cell_anchors):
        assert torch.equal(a, b)
