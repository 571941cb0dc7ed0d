"""GLIPDemo's test-time augmentation option on the tiny GLIP of test_inference.py."""
import numpy as np
import pytest

from glip.engine.predictor import GLIPDemo
from glip.engine.tta import View

from engine.test_inference import build_tiny_model, tiny_cfg


@pytest.fixture(scope="module")
def tiny_glip():
    return build_tiny_model()


def _image(h, w, seed):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def _rows(boxlist):
    rows = zip(boxlist.get_field("labels").tolist(), boxlist.get_field("scores").tolist(), boxlist.bbox.tolist())
    return sorted(rows, key=lambda r: (r[0], -r[1]))


def test_option_follows_test_use_multiscale(tiny_glip):
    cfg = tiny_cfg(TEST__USE_MULTISCALE=True, TEST__SCALES=(64, 80))
    assert GLIPDemo(cfg, load_model=False, model=tiny_glip).tta.views()[:2] == [View(64, False), View(64, True)]
    assert GLIPDemo(cfg, load_model=False, model=tiny_glip, test_time_augmentation=False).tta is None
    assert GLIPDemo(tiny_cfg(), load_model=False, model=tiny_glip).tta is None


def test_one_view_equals_plain_prediction_at_that_size(tiny_glip):
    """One unmirrored view at 64 px is the plain demo at min_image_size 64: per-phrase NMS at TEST.TH keeps every
    box of the post-processor, so the detections are the same (in original pixels)."""
    image = _image(90, 150, 0)
    names = ["cat", "traffic light", "tree"]
    plain = GLIPDemo(tiny_cfg(), load_model=False, model=tiny_glip, min_image_size=64, confidence_threshold=0.0)
    expected = plain.predict([image], names)[0]
    cfg = tiny_cfg(TEST__SCALES=(64,), TEST__MAX_SIZE=1000, TEST__FLIP=False, TEST__NUM_CLASSES=2)
    augmented = GLIPDemo(cfg, load_model=False, model=tiny_glip, confidence_threshold=0.0,
                         test_time_augmentation=True)
    got = augmented.predict([image], names)[0]
    assert got.size == (150, 90) and len(got) == len(expected) > 0
    # labels 1..3 of the prompt are merged, whatever TEST.NUM_CLASSES says
    assert set(got.get_field("labels").tolist()) <= {1, 2, 3}
    for g, e in zip(_rows(got), _rows(expected)):
        assert g[0] == e[0] and g[1] == pytest.approx(e[1], abs=1e-6) and g[2] == pytest.approx(e[2], abs=1e-3)
