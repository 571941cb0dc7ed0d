"""glip.api: load_model (config + weights in one call, hub names included), predict on one image or a list, in
any input form, in original pixels; annotate draws them; to_supervision converts when the library is there."""
import importlib.util

import numpy as np
import pytest
import torch
from helpers import load_golden
from helpers.glip_model import fill_model_
from helpers.tiny import TINY_BERT_OPTS
from PIL import Image

import glip
from glip import api

CONFIG = "configs/pretrain/glip_Swin_T_O365_GoldG.yaml"
TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", "24", "MODEL.SWINT.DEPTHS", "(1, 1, 1, 1)", "MODEL.SWINT.NUM_HEADS",
             "(1, 1, 1, 1)", "MODEL.SWINT.OUT_CHANNELS", "(24, 48, 96, 192)", "MODEL.DYHEAD.NUM_CONVS", "1",
             "MODEL.DYHEAD.USE_CHECKPOINT", "False", "MODEL.WEIGHT", ""] + [str(v) for v in TINY_BERT_OPTS]
NAMES = ["cat", "remote control", "blanket"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A golden-filled tiny GLIP saved as a checkpoint file ({"model": state dict})."""
    from glip.utils import cli
    from glip.modeling.detector import build_detection_model

    cfg = cli.merge_config(cli.base_config(), CONFIG, TINY_OPTS)
    model = fill_model_(build_detection_model(cfg))
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model(tiny_weights):
    return glip.load_model(CONFIG, tiny_weights, device="cpu", opts=TINY_OPTS, threshold=0.0, min_image_size=320)


@pytest.fixture(scope="module")
def photo():
    return load_golden("infer_chelsea_320.pt")["image"]["orig_rgb_uint8"].numpy()  # (300, 451, 3) RGB


def test_load_model_loads_the_weights(model, tiny_weights):
    from glip.engine.predictor import GLIPDemo

    assert isinstance(model, GLIPDemo) and model.cfg.MODEL.WEIGHT == str(tiny_weights)
    saved = torch.load(tiny_weights, weights_only=True)["model"]
    ours = model.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in saved.items())


def test_predict_returns_boxes_in_original_pixels(model, photo):
    result = glip.predict(model, Image.fromarray(photo), NAMES, threshold=0.0)
    assert set(result) == {"boxes", "scores", "labels", "phrases"}
    boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
    assert boxes.shape == (len(scores), 4) and len(scores) > 0 and labels.dtype == torch.int64
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    assert result["phrases"] == [NAMES[i - 1] for i in labels.tolist()]
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 451).all() and (boxes[:, 1::2] <= 300).all()
    # the same detections as the predictor's own output, scaled by hand from network-input pixels (320 x 481)
    raw = model.predict_all([photo[:, :, ::-1].copy()], NAMES)[0]
    assert raw.size == (451, 300) and torch.allclose(raw.bbox, boxes)


def test_predict_threshold_and_input_forms(model, photo, tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(photo).save(path)
    from_path = glip.predict(model, str(path), NAMES, threshold=0.0)
    high = glip.predict(model, path, NAMES, threshold=float(from_path["scores"][2]))
    assert torch.equal(high["scores"], from_path["scores"][from_path["scores"] > from_path["scores"][2]])
    batch = glip.predict(model, [photo[:, :, ::-1].copy(), str(path)], "cat. blanket", threshold=0.0)
    assert isinstance(batch, list) and len(batch) == 2
    torch.testing.assert_close(batch[0]["boxes"], batch[1]["boxes"])
    assert set(batch[0]["phrases"]) <= {"cat", "blanket"}


def test_annotate_draws_the_boxes(model, photo):
    result = glip.predict(model, Image.fromarray(photo), NAMES, threshold=0.0)
    top = {k: (v[:3] if k != "phrases" else v[:3]) for k, v in result.items()}
    drawn = np.asarray(glip.annotate(Image.fromarray(photo), top))
    assert drawn.shape == photo.shape
    changed = np.any(drawn != photo, axis=2)
    x1, y1, x2, y2 = (int(round(v)) for v in top["boxes"][0].tolist())
    inside = changed[y1 + 3: y2 - 3, x1 + 3: x2 - 3]
    assert changed[:, x1].any() or changed[:, min(x1 + 1, photo.shape[1] - 1)].any()
    assert inside.mean() < changed.mean() + 0.5  # an outline, not a filled box
    nothing = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
               "phrases": []}
    assert np.array_equal(np.asarray(glip.annotate(photo[:, :, ::-1].copy(), nothing)), photo)


def test_to_supervision(model, photo):
    result = glip.predict(model, Image.fromarray(photo), NAMES, threshold=0.0)
    if importlib.util.find_spec("supervision") is None:
        with pytest.raises(ImportError, match="pip install supervision"):
            api.to_supervision(result)
        return
    detections = api.to_supervision(result)
    assert np.allclose(detections.xyxy, result["boxes"].numpy())
    assert detections.class_id.tolist() == [i - 1 for i in result["labels"].tolist()]
    assert list(detections.data["class_name"]) == result["phrases"]


def test_load_model_errors_are_one_line_user_errors(tmp_path):
    from glip.utils.errors import UserError

    with pytest.raises(UserError, match="weight file not found"):
        glip.load_model(CONFIG, tmp_path / "missing.pth", opts=TINY_OPTS)
