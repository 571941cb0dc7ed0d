"""Full GLIP-T parity with the reference goldens (320-px inputs; the 800-px ones are marked slow)."""
import json

import pytest
import torch

from helpers import REFERENCE, load_golden
from helpers.glip_model import check_detections, detect_golden, golden_glip_tiny

IMAGES = ["astronaut", "chelsea"]
CAPTIONS = ["coco", "free"]


@pytest.fixture(scope="module")
def model():
    return golden_glip_tiny()


def _manifest(name):
    return json.loads((REFERENCE / f"state_dict_{name}.json").read_text())["keys"]


def test_fill_matches_reference_checksums(model):
    per_key = json.loads((REFERENCE / "fill_checksums_glip_tiny.json").read_text())["per_key"]
    state = model.state_dict()
    assert set(state) == set(per_key)
    for key, ref in per_key.items():
        value = state[key].double()
        assert value.sum().item() == pytest.approx(ref["sum"], rel=1e-9, abs=1e-6), key
        assert value.abs().sum().item() == pytest.approx(ref["abs_sum"], rel=1e-9, abs=1e-6), key
        assert value.flatten()[:3].tolist() == pytest.approx(ref["first"], rel=0, abs=0), key


def test_state_dict_matches_glip_tiny_manifest(model):
    manifest = _manifest("glip_tiny")
    state = {"module." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state.keys() == manifest.keys()
    for key, entry in manifest.items():
        assert state[key] == tuple(entry["shape"]), key


def test_state_dict_matches_glip_large_manifest():
    from glip.config import cfg
    from glip.modeling.detector import build_detection_model
    from helpers import FIXTURES

    c = cfg.clone()
    c.merge_from_file(str(FIXTURES / "official_configs" / "pretrain" / "glip_Swin_L.yaml"))
    with torch.device("meta"):
        large = build_detection_model(c)
    manifest = _manifest("glip_large")
    state = {"module." + k: tuple(v.shape) for k, v in large.state_dict().items()}
    assert state.keys() == manifest.keys()
    for key, entry in manifest.items():
        assert state[key] == tuple(entry["shape"]), key


def _run_parts(model, golden, caption_key):
    size = golden["size320"]
    cap = size["captions"][caption_key]
    x = size["input_tensor"]
    with torch.no_grad():
        features = model.backbone(x)
        language = model.encode_text([cap["caption"]], x.device)
        out = model.rpn.head(features, dict(language), language["embedded"])
    return features, language, out


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("caption", CAPTIONS)
def test_intermediate_tensors_match_320(model, image, caption):
    golden = load_golden(f"infer_{image}_320.pt")
    cap = golden["size320"]["captions"][caption]
    features, language, out = _run_parts(model, golden, caption)
    for ours, ref in zip(features, golden["size320"]["fpn_features"]):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    n = cap["num_valid_tokens"]
    for key in ("hidden", "embedded", "aggregate"):
        ours = language[key] if key == "aggregate" else language[key][:, :n]
        torch.testing.assert_close(ours, cap["lang"][key], atol=1e-4, rtol=0)
    for key in ("box_regression", "centerness"):
        for ours, ref in zip(out[key], cap["head"][key]):
            torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-4)
    for ours, ref in zip(out["dot_product_logits"], cap["head"]["dot_product_logits"]):
        torch.testing.assert_close(ours[..., :n], ref, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("caption", CAPTIONS)
def test_detections_match_320(model, image, caption):
    det, ref = detect_golden(model, load_golden(f"infer_{image}_320.pt"), "size320", caption)
    check_detections(det, ref)


@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("caption", CAPTIONS)
def test_detections_match_800(model, image, caption):
    det, ref = detect_golden(model, load_golden(f"infer_{image}_800.pt"), "size800", caption)
    check_detections(det, ref)

