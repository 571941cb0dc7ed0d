"""Loading official-style checkpoints and backbone-only ImageNet files into a model."""
import logging

import pytest
import torch
from torch import nn

from glip.engine.weights import WeightLoadError, load_weights, read_checkpoint


class Toy(nn.Module):
    """A model whose keys look like GLIP's: backbone.body, language_backbone, rpn.head (with cls_logits)."""

    def __init__(self, num_classes=80, window=7):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = nn.Module()
        self.backbone.body.patch_embed = nn.Conv2d(3, 4, 2)
        self.backbone.body.attn = nn.Module()
        self.backbone.body.attn.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, 2))
        self.language_backbone = nn.Module()
        self.language_backbone.body = nn.Module()
        self.language_backbone.body.model = nn.Module()
        self.language_backbone.body.model.embeddings = nn.Embedding(10, 4)
        self.rpn = nn.Module()
        self.rpn.head = nn.Module()
        self.rpn.head.cls_logits = nn.Conv2d(4, num_classes, 1)
        self.rpn.head.bbox_pred = nn.Conv2d(4, 4, 1)


def _official_file(tmp_path, model, extra=None, drop=()):
    state = {"module." + k: v.clone() + 1.0 for k, v in model.state_dict().items() if k not in drop}
    state.update(extra or {})
    path = tmp_path / "glip_official.pth"
    torch.save({"model": state, "iteration": 5}, path)
    return path, state


def test_official_checkpoint_loads_every_key(tmp_path):
    src = Toy()
    path, state = _official_file(tmp_path, src)
    dst = Toy()
    report = load_weights(dst, path)
    for key, value in dst.state_dict().items():
        assert torch.equal(value, state["module." + key]), key
    assert len(report["loaded"]) == len(dst.state_dict())


def test_legacy_extra_keys_are_accepted_and_logged(tmp_path, caplog):
    extra = {"module.language_backbone.body.model.embeddings.position_ids": torch.arange(512)[None],
             "module.language_backbone.body.model.pooler.dense.weight": torch.zeros(4, 4)}
    path, _ = _official_file(tmp_path, Toy(), extra=extra)
    with caplog.at_level(logging.INFO, logger="glip.engine.weights"):
        report = load_weights(Toy(), path)
    assert sorted(report["legacy_extra"]) == sorted(k[len("module."):] for k in extra)
    assert "legacy extra" in caplog.text


def test_changed_num_classes_keeps_initialisation_and_is_logged(tmp_path, caplog):
    path, state = _official_file(tmp_path, Toy(num_classes=80))
    dst = Toy(num_classes=1)
    before = dst.rpn.head.cls_logits.weight.clone()
    with caplog.at_level(logging.INFO, logger="glip.engine.weights"):
        report = load_weights(dst, path)
    assert set(report["shape_changed"]) == {"rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"}
    assert torch.equal(dst.rpn.head.cls_logits.weight, before)
    assert torch.equal(dst.rpn.head.bbox_pred.weight, state["module.rpn.head.bbox_pred.weight"])
    assert "cls_logits" in caplog.text


def test_missing_and_unexpected_keys_are_named(tmp_path):
    path, _ = _official_file(tmp_path, Toy(), drop=("rpn.head.bbox_pred.weight",),
                             extra={"module.rpn.head.something_else": torch.zeros(3)})
    with pytest.raises(WeightLoadError) as err:
        load_weights(Toy(), path)
    assert "rpn.head.bbox_pred.weight" in str(err.value)
    assert "rpn.head.something_else" in str(err.value)
    assert str(path) in str(err.value)


def test_mismatched_shape_is_named(tmp_path):
    src = Toy()
    src.rpn.head.bbox_pred = nn.Conv2d(4, 8, 1)
    path, _ = _official_file(tmp_path, src)
    with pytest.raises(WeightLoadError, match=r"rpn.head.bbox_pred.weight \(file \(8, 4, 1, 1\), model \(4, 4, 1, 1\)\)"):
        load_weights(Toy(), path)


def test_allowed_missing_prompt_offset(tmp_path):
    path, _ = _official_file(tmp_path, Toy())
    dst = Toy()
    dst.rpn.tunable_linear = nn.Linear(4, 1000, bias=False)
    nn.init.zeros_(dst.rpn.tunable_linear.weight)
    report = load_weights(dst, path)
    assert report["allowed_missing"] == ["rpn.tunable_linear.weight"]
    assert dst.rpn.tunable_linear.weight.abs().sum() == 0


def test_backbone_only_file_is_matched_by_suffix(tmp_path):
    dst = Toy(window=7)
    imagenet = {"patch_embed.weight": torch.full((4, 3, 2, 2), 2.0), "patch_embed.bias": torch.full((4,), 3.0),
                "head.weight": torch.zeros(1000, 4), "norm.weight": torch.ones(4),
                # another window size: interpolated, as the reference does
                "attn.relative_position_bias_table": torch.ones(23 * 23, 2)}
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": imagenet}, path)
    head_before = dst.rpn.head.bbox_pred.weight.clone()
    report = load_weights(dst, path)
    assert torch.equal(dst.backbone.body.patch_embed.weight, imagenet["patch_embed.weight"])
    assert torch.equal(dst.backbone.body.patch_embed.bias, imagenet["patch_embed.bias"])
    assert report["resized"] == ["backbone.body.attn.relative_position_bias_table"]
    torch.testing.assert_close(dst.backbone.body.attn.relative_position_bias_table, torch.ones(13 * 13, 2))
    assert torch.equal(dst.rpn.head.bbox_pred.weight, head_before)
    assert "rpn.head.bbox_pred.weight" in report["unmatched"]


def test_missing_file_and_bad_content_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        read_checkpoint(tmp_path / "nowhere.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"a": "not a tensor"}}, bad)
    with pytest.raises(WeightLoadError, match="bad.pth"):
        read_checkpoint(bad)


# --- checking a file against a model's shapes (no loading) --------------------------------------------------------

def _manifest(name):
    """{key without "module.": shape} of an official checkpoint (tests/fixtures/reference/state_dict_*.json)."""
    import json

    from helpers import REFERENCE

    keys = json.loads((REFERENCE / "state_dict_{}.json".format(name)).read_text())["keys"]
    return {k[len("module."):]: tuple(v["shape"]) for k, v in keys.items()}


def test_glip_l_file_for_glip_t_model_is_one_summary_line():
    from glip.engine.weights import check_fit, describe_checkpoint

    tiny, large = _manifest("glip_tiny"), _manifest("glip_large")
    differ = [k for k in tiny if k in large and tiny[k] != large[k]
              and "relative_position_bias_table" not in k and "cls_logits" not in k]
    with pytest.raises(WeightLoadError) as err:
        check_fit(large, tiny, "glip_large.pth", "the model of glip_Swin_T.yaml")
    message = str(err.value)
    assert "\n" not in message and len(message) < 600
    assert message.startswith("weight file glip_large.pth does not fit the model of glip_Swin_T.yaml: ")
    first = differ[0]
    assert "{} of {} tensors differ in shape (first: {} (file {}, model {}))".format(
        len(differ), len(tiny), first, large[first], tiny[first]) in message
    assert "{} tensors are in the file but not in the model".format(len(set(large) - set(tiny))) in message
    assert "it looks like a GLIP checkpoint with a Swin-L backbone" in message
    assert describe_checkpoint(tiny) == "a GLIP checkpoint with a Swin-T backbone"
    assert check_fit(tiny, tiny, "glip_tiny.pth")["loaded"] == list(tiny)


def test_backbone_file_of_another_swin_is_refused_and_one_that_fits_passes():
    from glip.engine.weights import check_fit

    tiny, large = _manifest("glip_tiny"), _manifest("glip_large")
    imagenet_l = {k[len("backbone.body."):]: v for k, v in large.items() if k.startswith("backbone.body.")}
    imagenet_t = {k[len("backbone.body."):]: v for k, v in tiny.items() if k.startswith("backbone.body.")}
    with pytest.raises(WeightLoadError, match=r"tensors it shares with the model differ in shape .*a Swin-L backbone "
                                              r"checkpoint"):
        check_fit(imagenet_l, tiny, "swin_large.pth")
    assert check_fit(imagenet_t, tiny, "swin_tiny.pth") == {}
    with pytest.raises(WeightLoadError, match="none of its 1 tensors matches a model tensor by name"):
        check_fit({"something.else": (3,)}, tiny, "other.pth")
