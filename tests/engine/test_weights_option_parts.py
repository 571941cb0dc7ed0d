"""A checkpoint without the parameters an option adds (MLM head, contrastive projections, ...) loads as in the
reference: those keep their initialisation and are named in the log; nothing else is relaxed."""
import logging

import pytest
import torch
from helpers.tiny import tiny_glip_config

from glip.engine.weights import DEFAULT_ALLOWED_MISSING, OPTION_PARTS, WeightLoadError, load_weights
from glip.modeling.detector import build_detection_model

FUSE = "MODEL.DYHEAD.FUSE_CONFIG."


@pytest.fixture(scope="module")
def glip_t_file(tmp_path_factory):
    """A GLIP-T-shaped checkpoint (tiny) without any option part, in the official layout."""
    torch.manual_seed(0)
    model = build_detection_model(tiny_glip_config())
    path = tmp_path_factory.mktemp("ckpt") / "glip_tiny.pth"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path, model.state_dict()


def test_mlm_head_keeps_its_initialisation_and_is_logged(glip_t_file, caplog):
    path, saved = glip_t_file
    torch.manual_seed(1)
    model = build_detection_model(tiny_glip_config(FUSE + "MLM_LOSS", True))
    initial = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("rpn.head.mlm_head.")}
    with caplog.at_level(logging.INFO, logger="glip.engine.weights"):
        report = load_weights(model, path)
    assert sorted(report["allowed_missing"]) == sorted(initial)
    assert len(initial) == 7 and report["missing"] == [] and report["unexpected"] == []
    state = model.state_dict()
    for key, value in initial.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state["rpn.head.bbox_pred.weight"], saved["rpn.head.bbox_pred.weight"])
    assert any("allowed missing 7 keys" in r.message and "rpn.head.mlm_head.decoder.weight" in r.message
               for r in caplog.records)


def test_training_only_parts_in_the_file_load_into_a_model_without_them(tmp_path, caplog):
    torch.manual_seed(0)
    trained = build_detection_model(tiny_glip_config(FUSE + "MLM_LOSS", True))
    path = tmp_path / "mlm.pth"
    torch.save({"model": trained.state_dict()}, path)
    plain = build_detection_model(tiny_glip_config())   # e.g. the evaluation command's MLM_LOSS False
    with caplog.at_level(logging.INFO, logger="glip.engine.weights"):
        report = load_weights(plain, path)
    assert len(report["option_extra"]) == 7 and report["unexpected"] == []
    assert any("option extra 7 keys" in r.message for r in caplog.records)


def test_parts_that_change_detections_must_match_the_config(tmp_path):
    torch.manual_seed(0)
    trained = build_detection_model(tiny_glip_config(FUSE + "USE_TOKEN_LOSS", True))
    path = tmp_path / "token.pth"
    torch.save({"model": trained.state_dict()}, path)
    with pytest.raises(WeightLoadError, match=r"2 tensors are in the file but not in the model "
                                              r"\(first: rpn.head.token_logits\.(weight|bias)\)"):
        load_weights(build_detection_model(tiny_glip_config()), path)


def test_option_parts_are_an_explicit_list():
    assert set(DEFAULT_ALLOWED_MISSING) == {p for prefixes in OPTION_PARTS.values() for p in prefixes}
    assert not any(p.startswith(("backbone.", "language_backbone.")) for p in DEFAULT_ALLOWED_MISSING)
    torch.manual_seed(0)
    for key, prefixes in OPTION_PARTS.items():
        assert key.startswith(FUSE)
    model = build_detection_model(tiny_glip_config(FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True))
    added = [k for k in model.state_dict() if k.startswith("rpn.loss_evaluator.")]
    assert sorted(added) == ["rpn.loss_evaluator.shallow_contrastive_projection_image.bias",
                             "rpn.loss_evaluator.shallow_contrastive_projection_image.weight",
                             "rpn.loss_evaluator.shallow_contrastive_projection_text.bias",
                             "rpn.loss_evaluator.shallow_contrastive_projection_text.weight",
                             "rpn.loss_evaluator.shallow_log_scale"]
    assert all(k.startswith(DEFAULT_ALLOWED_MISSING) for k in added)
