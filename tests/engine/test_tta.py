"""Test-time augmentation: the views, their transforms, un-mirroring and resizing, and the evaluation loop on a
tiny GLIP, where the merged result equals running every view by hand and merging per class with +1-IoU NMS."""
import json

import pytest
import torch
from PIL import Image

from glip.data.collate import BBoxAugCollator, UntransformedImages
from glip.engine.tta import TestTimeAugmentation, View, build_tta
from glip.structures.bounding_box import BoxList
from glip.structures.image_list import to_image_list
from glip.utils import cli

from engine.test_inference import GLIP_T, TINY_OPTS, _load, _run, tiny_cfg, tiny_model, tiny_setup  # noqa: F401


def _image(w, h, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 255, (h, w, 3), generator=gen, dtype=torch.uint8).numpy(), "RGB")


def test_views_scales_then_flip_and_ranges_only_with_one_per_scale():
    tta = TestTimeAugmentation(scales=(64, 96), max_size=128, flip=True, ranges=((0, 50), (10, 1000)))
    assert tta.views() == [View(64, False, (0, 50)), View(64, True, (0, 50)), View(96, False, (10, 1000)),
                           View(96, True, (10, 1000))]
    tta = TestTimeAugmentation(scales=(64, 96), max_size=128, flip=False, ranges=((0, 50),))
    assert tta.views() == [View(64, False), View(96, False)]


def test_view_transform_is_the_test_transform_at_that_scale_mirrored():
    from glip.data.transforms import build_transforms

    c = cli.merge_config(cli.base_config(), GLIP_T, ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "100",
                                                     "TEST.MAX_SIZE", "100"])
    image = _image(160, 120)
    tta = build_tta(c)
    plain = build_transforms(c, is_train=False)(image)
    assert plain.shape == (3, 64, 85)
    assert torch.equal(tta.transform(image, View(64, False)), plain)
    assert torch.equal(tta.transform(image, View(64, True)), plain.flip(-1))
    assert tta.transform(image, View(96, False)).shape == (3, 75, 100)  # the long side is capped by TEST.MAX_SIZE


def test_build_tta_reads_the_test_keys():
    c = cli.base_config()
    c.TEST.SCALES, c.TEST.MAX_SIZE, c.TEST.FLIP = (300, 400), 700, False
    c.TEST.TH, c.TEST.SPECIAL_NMS, c.TEST.PRE_NMS_TOP_N, c.TEST.NUM_CLASSES = 0.5, "vote", 50, 4
    tta = build_tta(c)
    assert (tta.scales, tta.max_size, tta.flip, tta.ranges) == ([300, 400], 700, False, None)
    assert (tta.nms_thresh, tta.nms_type, tta.max_detections, tta.classes) == (0.5, "vote", 50, [1, 2, 3])
    c.TEST.SELECT_CLASSES = (3, 1)
    assert build_tta(c).classes == [3, 1]
    c.TEST.SPECIAL_NMS = "votes"
    with pytest.raises(ValueError, match="SPECIAL_NMS"):
        build_tta(c)


class LeftQuarter:
    """Stub detector: per view tensor one box over its left quarter and upper half (score by scale)."""

    def __init__(self):
        self.shapes = []

    def __call__(self, tensors):
        outs = []
        for t in tensors:
            h, w = t.shape[-2:]
            self.shapes.append((h, w))
            box = BoxList(torch.tensor([[0.0, 0.0, w / 4, h / 2]]), (w, h))
            box.add_field("scores", torch.tensor([w / 1000]))
            box.add_field("labels", torch.tensor([1]))
            outs.append(box)
        return outs


def test_views_are_unmirrored_resized_to_the_original_and_merged():
    tta = TestTimeAugmentation(scales=(60, 120), max_size=1000, flip=True, nms_thresh=0.6, classes=[1])
    detect = LeftQuarter()
    views = tta.detect_views([_image(200, 100)], detect)[0]
    assert detect.shapes == [(60, 120), (60, 120), (120, 240), (120, 240)]
    # plain views: the left quarter [0, 0, w/4, h/2] scaled to 200 x 100; mirrored views: x -> w - x - 1 in the
    # view, then scaled: [(w - w/4 - 1), 0, (w - 1), h/2] * (200 / w)
    assert views[0].bbox.tolist() == [pytest.approx([0, 0, 50, 50])]
    assert views[1].bbox.tolist() == [pytest.approx([(89 / 120) * 200, 0, (119 / 120) * 200, 50])]
    assert views[3].bbox.tolist() == [pytest.approx([(179 / 240) * 200, 0, (239 / 240) * 200, 50])]
    assert all(v.size == (200, 100) for v in views)
    merged = tta([_image(200, 100)], LeftQuarter())[0]
    # left boxes of both scales coincide (IoU 1): the 240-wide view's (score 0.24) wins; the right boxes overlap
    # with IoU > 0.6 as well -> one left and one right box
    assert merged.size == (200, 100) and len(merged) == 2
    assert merged.get_field("scores").tolist() == pytest.approx([0.24, 0.24])


def test_bbox_aug_collator_keeps_the_images_untransformed():
    images = [_image(20, 10), _image(30, 10)]
    batch = BBoxAugCollator()([(images[0], "t0", 0), (images[1], "t1", 1)])
    assert isinstance(batch.images, UntransformedImages) and list(batch.images) == images
    assert batch.images.to("cpu") is batch.images
    assert (batch.targets, batch.indices) == (("t0", "t1"), (0, 1))
    assert batch.positive_map is batch.positive_map_eval is batch.greenlight_map is None


# --- tiny GLIP end to end -----------------------------------------------------------------------------------------

def _plus_one_nms(boxes, scores, thresh):
    """Greedy NMS written out: visit by descending score, drop a box whose +1 IoU with a kept one is > thresh."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        ok = True
        for j in kept:
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1 + 1) * max(0.0, y2 - y1 + 1)
            area = [(b[2] - b[0] + 1) * (b[3] - b[1] + 1) for b in (boxes[i], boxes[j])]
            if inter / (area[0] + area[1] - inter) > thresh:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _by_hand(model, image, scales, max_size, query, label_to_token, classes):
    """Every view of the PIL `image` run alone through the model, un-mirrored, resized, then per-class NMS."""
    from glip.data.transforms import build_transforms

    boxes, scores, labels = [], [], []
    for scale in scales:
        c = cli.merge_config(cli.base_config(), GLIP_T, TINY_OPTS + ["INPUT.MIN_SIZE_TEST", str(scale),
                                                                      "INPUT.MAX_SIZE_TEST", str(max_size)])
        tensor = build_transforms(c, is_train=False)(image)
        for flip in (False, True):
            view = tensor.flip(-1) if flip else tensor
            with torch.no_grad():
                out = model(to_image_list([view], 32), captions=[query], positive_map=label_to_token)[0]
            if flip:
                out = out.transpose(0)
            out = out.resize(image.size)
            boxes += out.bbox.tolist()
            scores += out.get_field("scores").tolist()
            labels += out.get_field("labels").tolist()
    expected = []
    for label in classes:
        idx = [i for i, lab in enumerate(labels) if lab == label]
        kept = _plus_one_nms([boxes[i] for i in idx], [scores[i] for i in idx], 0.6)
        expected += [(label, scores[idx[k]], boxes[idx[k]]) for k in kept]
    return expected


@pytest.mark.slow
def test_augmented_evaluation_equals_merging_single_view_runs_by_hand(tiny_setup, tmp_path):
    from glip.data.build import make_data_loader

    model, _ = tiny_setup
    cfg = tiny_cfg(TEST__USE_MULTISCALE=True, TEST__SCALES=(64, 96), TEST__MAX_SIZE=128, TEST__IMS_PER_BATCH=2,
                   TEST__NUM_CLASSES=4, DATALOADER__ASPECT_RATIO_GROUPING=False)
    result = _run(model, cfg, str(tmp_path / "tta"))
    assert result.protocol == "coco" and json.loads((tmp_path / "tta/bbox.json").read_text())
    predictions = _load(tmp_path / "tta/predictions.pth")
    dataset = make_data_loader(cfg, is_train=False)[0].dataset
    query, label_to_token = "cat. traffic light. tree", {1: [1], 2: [3, 4], 3: [6]}
    for index, prediction in enumerate(predictions):
        image = dataset[index][0]  # untransformed (TEST.USE_MULTISCALE)
        assert isinstance(image, Image.Image) and prediction.size == image.size  # original pixels
        expected = _by_hand(model, image, (64, 96), 128, query, label_to_token, [1, 2, 3])
        assert len(expected) > 0
        got = list(zip(prediction.get_field("labels").tolist(), prediction.get_field("scores").tolist(),
                       prediction.bbox.tolist()))
        assert [g[0] for g in got] == [e[0] for e in expected]
        for g, e in zip(got, expected):
            assert g[1] == pytest.approx(e[1], abs=1e-5)
            assert g[2] == pytest.approx(e[2], abs=1e-3)


def test_one_view_without_flip_equals_plain_evaluation(tiny_setup, tmp_path):
    """A single view at INPUT.MIN/MAX_SIZE_TEST is the plain test transform: the merged result is the plain
    predictions in original pixels (per-class NMS at TEST.TH 0.6 keeps all of the post-processor's boxes)."""
    model, _ = tiny_setup
    first_batch = dict(TEST__IMS_PER_BATCH=2, TEST__SUBSET=1, DATALOADER__ASPECT_RATIO_GROUPING=False)
    _run(model, tiny_cfg(**first_batch), str(tmp_path / "plain"))
    _run(model, tiny_cfg(TEST__USE_MULTISCALE=True, TEST__SCALES=(64,), TEST__MAX_SIZE=128, TEST__FLIP=False,
                         TEST__NUM_CLASSES=4, **first_batch), str(tmp_path / "tta"))
    plain, augmented = _load(tmp_path / "plain/predictions.pth"), _load(tmp_path / "tta/predictions.pth")
    assert len(plain) == len(augmented) == 2
    for p, a in zip(plain, augmented):
        assert len(a) == len(p) > 0
        p = p.resize(a.size)
        key = lambda row: (row[0], -row[1])  # noqa: E731
        rows_p = sorted(zip(p.get_field("labels").tolist(), p.get_field("scores").tolist(), p.bbox.tolist()), key=key)
        rows_a = sorted(zip(a.get_field("labels").tolist(), a.get_field("scores").tolist(), a.bbox.tolist()), key=key)
        for rp, ra in zip(rows_p, rows_a):
            assert rp[0] == ra[0] and rp[1] == pytest.approx(ra[1], abs=1e-6)
            assert rp[2] == pytest.approx(ra[2], abs=1e-3)


@pytest.mark.slow
def test_finetune_evaluation_runs_the_augmentation(tiny_setup, tmp_path):
    """`glip.engine.finetune.evaluate_splits` (finetune's evaluation) with TEST.USE_MULTISCALE gives the merged
    detections of the evaluation loop (original pixels)."""
    from glip.engine.finetune import evaluate_splits

    model, _ = tiny_setup
    cfg = tiny_cfg(TEST__USE_MULTISCALE=True, TEST__SCALES=(64,), TEST__MAX_SIZE=128, TEST__NUM_CLASSES=4,
                   TEST__IMS_PER_BATCH=2, TEST__SUBSET=1, DATALOADER__ASPECT_RATIO_GROUPING=False)
    cfg.OUTPUT_DIR = str(tmp_path / "ft")
    (result,) = evaluate_splits(cfg, model, ["test"])
    assert result.protocol == "coco"
    augmented = _load(tmp_path / "ft/inference/test/predictions.pth")
    _run(model, cfg, str(tmp_path / "loop"))
    for a, b in zip(augmented, _load(tmp_path / "loop/predictions.pth")):
        assert a.size == b.size and torch.equal(a.bbox, b.bbox)
