"""Transfer modes on a tiny GLIP: which tensors train and change in each mode, prompt caching and prompt files.

The tiny model is the GLIP-T config with a 1-block Swin of width 24, one dyhead layer and (test-only) a 1-layer
BERT, so a training step takes seconds. The mode definitions checked here are written out by hand from the
reference's ``finetune.py`` (``train()`` + ``tuning_highlevel_override``), independently of glip/modeling/freezing.py.
"""
import copy
import json
from pathlib import Path

import pytest
import torch

from data.tiny_datasets import write_coco
from glip.config import cfg as default_cfg
from glip.modeling.freezing import TUNING_MODES
from glip.utils.cli import apply_tuning_highlevel_override

ROOT = Path(__file__).resolve().parents[2]
GLIP_T = ROOT / "configs" / "pretrain" / "glip_Swin_T_O365_GoldG.yaml"
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]

# Command-line style options shrinking GLIP-T (what the builders read) and the inputs.
TINY_OPTS = [
    "MODEL.SWINT.EMBED_DIM", 24, "MODEL.SWINT.DEPTHS", (1, 1, 1, 1), "MODEL.SWINT.NUM_HEADS", (1, 1, 1, 1),
    "MODEL.SWINT.OUT_CHANNELS", (24, 48, 96, 192), "MODEL.SWINT.DROP_PATH_RATE", 0.0, "MODEL.DYHEAD.NUM_CONVS", 1,
    "MODEL.DYHEAD.USE_CHECKPOINT", False, "MODEL.FPN.DROP_BLOCK", False, "MODEL.DEVICE", "cpu",
    "SOLVER.USE_AMP", False, "SOLVER.MODEL_EMA", 0.0, "SOLVER.IMS_PER_BATCH", 2, "TEST.IMS_PER_BATCH", 2,
    "SOLVER.WARMUP_ITERS", 0, "INPUT.MIN_SIZE_TRAIN", 64, "INPUT.MAX_SIZE_TRAIN", 96, "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 96, "AUGMENT.MULT_MIN_SIZE_TRAIN", (), "AUGMENT.FLIP_PROB_TRAIN", 0.0,
    "DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding", "DATASETS.DISABLE_SHUFFLE", True,
    "DATALOADER.NUM_WORKERS", 0, "DATALOADER.ASPECT_RATIO_GROUPING", False,
    "MODEL.DYHEAD.NUM_CLASSES", 3, "MODEL.ATSS.NUM_CLASSES", 3,
]


def write_tiny_task(root: Path) -> Path:
    """Two-class COCO data (4 train images, 2 val/test images) and a task config registering it."""
    images = [dict(id=i + 1, file_name="{}.jpg".format(i), width=64, height=48) for i in range(4)]
    anns = [dict(image_id=i + 1, bbox=[4 + 3 * i, 6, 22, 20], category_id=1 + i % 2) for i in range(4)]
    anns.append(dict(image_id=1, bbox=[34, 10, 16, 24], category_id=2))
    img_dir, train_ann = write_coco(root / "train", images, anns, [dict(c) for c in CATEGORIES])
    _, val_ann = write_coco(root / "train", images[:2], [a for a in anns if a["image_id"] <= 2],
                            [dict(c) for c in CATEGORIES], name="val.json", write_images=False)
    register = {"train": {"img_dir": img_dir, "ann_file": train_ann},
                "val": {"img_dir": img_dir, "ann_file": val_ann},
                "test": {"img_dir": img_dir, "ann_file": val_ann}}
    task = {"DATASETS": {"REGISTER": register, "TRAIN": '("train",)', "TEST": '("val",)'}}
    path = root / "task.yaml"
    path.write_text(_yaml(task))
    return path


def _yaml(tree, indent=0) -> str:
    lines = []
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(" " * indent + "{}:".format(key))
            lines.append(_yaml(value, indent + 2))
        else:
            lines.append(" " * indent + "{}: {}".format(key, json.dumps(value) if "/" in str(value) else value))
    return "\n".join(lines)


def tiny_config(task_file: Path, mode=None, extra=()):
    c = default_cfg.clone()
    c.defrost()
    c.merge_from_file(str(GLIP_T))
    c.merge_from_list(list(TINY_OPTS))
    c.merge_from_file(str(task_file))
    c.merge_from_list(list(extra))
    if mode is not None:
        c.SOLVER.TUNING_HIGHLEVEL_OVERRIDE = mode
        apply_tuning_highlevel_override(c)
    return c


def shrink_bert(model):
    """Test-only: keep one BERT layer (the mode rules do not depend on the depth)."""
    encoder = model.language_backbone.body.model.encoder
    encoder.layer = encoder.layer[:1]
    return model


# Trainable parameters of each mode, as the reference's finetune.py defines them (hand-written rules).
LINEAR_PROB_KEYS = ("bbox_pred", "cls_logits", "centerness", "cosine_scale", "dot_product_projection_text",
                    "head.log_scale", "head.bias_lang", "head.bias0")


def reference_trainable(name: str, mode: str) -> bool:
    if name.startswith("rpn.tunable_linear"):
        return True
    if name.startswith("rpn.head.cls_logits"):  # frozen by the dot-product token loss in every mode
        return False
    if mode == "full":
        return True
    if mode == "linear_prob":
        return name.startswith("rpn.") and any(k in name for k in LINEAR_PROB_KEYS)
    if mode in ("language_prompt_v1", "language_prompt_v3"):
        return name.startswith("language_backbone.")
    return False  # v2, v4: only the prompt offset


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    return write_tiny_task(tmp_path_factory.mktemp("tiny_task"))


@pytest.fixture(scope="module")
def tiny(task_file):
    """One tiny model (with the prompt offset), its initial weights and one fixed training batch."""
    from glip.data.build import make_data_loader
    from glip.modeling.detector import build_detection_model

    torch.manual_seed(0)
    cfg = tiny_config(task_file, extra=["MODEL.DYHEAD.FUSE_CONFIG.ADD_LINEAR_LAYER", True,
                                        "SOLVER.MAX_ITER", 1])
    model = shrink_bert(build_detection_model(cfg))
    with torch.no_grad():  # a non-zero offset so that gradients reach every part in every mode
        model.rpn.tunable_linear.weight.normal_(0, 0.01)
    batch = next(iter(make_data_loader(cfg, is_train=True)))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    return {"cfg": cfg, "model": model, "batch": batch, "initial": initial}


def _loss(model, batch):
    losses = model(batch.images, targets=batch.targets, captions=[t.get_field("caption") for t in batch.targets],
                   positive_map=batch.positive_map)
    return sum(losses.values())


def _reset(tiny, mode):
    model = tiny["model"]
    model.load_state_dict(tiny["initial"])
    cfg = tiny_config_for(tiny, mode)
    trainable = model.set_freeze_policy(TUNING_MODES[mode])
    model.zero_grad(set_to_none=True)
    model.train()
    return model, cfg, trainable


def tiny_config_for(tiny, mode):
    c = tiny["cfg"].clone()
    c.SOLVER.TUNING_HIGHLEVEL_OVERRIDE = mode
    apply_tuning_highlevel_override(c)
    return c


@pytest.mark.parametrize("mode", sorted(TUNING_MODES))
def test_mode_sets_requires_grad_as_the_reference(tiny, mode):
    model, _, trainable = _reset(tiny, mode)
    names = [n for n, _ in model.named_parameters()]
    assert set(trainable) == {n for n in names if reference_trainable(n, mode)}
    assert trainable == [n for n, p in model.named_parameters() if p.requires_grad]
    # A frozen BERT runs in eval mode (no dropout) while the model trains, as the reference's train()/trainer.
    frozen_language = mode in ("linear_prob", "language_prompt_v2", "language_prompt_v4")
    assert all(m.training is not frozen_language for m in model.language_backbone.modules())


# The golden (end_to_end/golden/finetune_modes.pt) records full and language_prompt_v2; the other modes are slow.
STEP_MODES = [m if m in ("full", "language_prompt_v2") else pytest.param(m, marks=pytest.mark.slow)
              for m in sorted(TUNING_MODES)]


@pytest.mark.parametrize("mode", STEP_MODES)
def test_one_step_changes_exactly_the_trainable_tensors(tiny, mode):
    """One optimizer step: frozen tensors stay bit-identical, and every tensor that got a gradient changed."""
    from glip.solver.build import make_optimizer

    model, cfg, trainable = _reset(tiny, mode)
    optimizer = make_optimizer(cfg, model)
    optimizer.zero_grad()
    _loss(model, tiny["batch"]).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    optimizer.step()
    after = model.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, tiny["initial"][k])}
    assert changed <= set(trainable)
    assert with_grad <= changed
    if mode in ("language_prompt_v2", "language_prompt_v4"):
        assert changed == {"rpn.tunable_linear.weight"}  # as the golden: none of the checkpoint's tensors
    if mode == "full":
        assert {"rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"}.isdisjoint(changed)
        for prefix in ("backbone.body.", "backbone.fpn.", "language_backbone.", "rpn.head.dyhead_tower."):
            assert any(k.startswith(prefix) for k in changed), prefix


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(TUNING_MODES))
def test_loss_decreases_in_every_mode(tiny, mode):
    from helpers.stochastic import no_dropout

    from glip.solver.build import make_optimizer

    # No dropout (a steady loss from the parts that train); the prompt offset alone needs a larger step.
    model, cfg, _ = _reset(tiny, mode)
    lr = 1e-2 if TUNING_MODES[mode].add_linear_layer else 1e-3
    cfg.SOLVER.BASE_LR, cfg.SOLVER.LANG_LR = lr, lr
    optimizer = make_optimizer(cfg, model)
    losses = []
    with no_dropout(model):
        for _ in range(4):
            optimizer.zero_grad()
            loss = _loss(model, tiny["batch"])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_cached_language_backbone_encodes_each_caption_once(tiny):
    from glip.engine.prompt_tuning import CachedLanguageBackbone

    model = tiny["model"]
    model.load_state_dict(tiny["initial"])
    real = model.language_backbone.eval()  # frozen modes keep it in eval mode
    tokens = model.tokenize(["cat. dog", "dog. cat", "cat. dog"], "cpu")
    with torch.no_grad():
        expected = real(tokens["input_ids"], tokens["attention_mask"])
    calls = []
    cached = CachedLanguageBackbone(real.body)
    cached.body.register_forward_hook(lambda *a: calls.append(1))
    for _ in range(3):
        out = cached(tokens["input_ids"], tokens["attention_mask"])
    assert len(calls) == 1 and len(cached) == 2 and cached.misses == 2
    for key in ("hidden", "embedded", "aggregate"):
        torch.testing.assert_close(out[key], expected[key], rtol=1e-5, atol=1e-5)
    assert torch.equal(out["masks"], expected["masks"])


def test_saved_prompt_detects_without_language_backbone(tiny, tmp_path):
    from glip.engine.prompt_tuning import load_prompt, save_prompt

    model = tiny["model"]
    model.load_state_dict(tiny["initial"])
    model.eval()
    images = tiny["batch"][0]
    caption = "cat. dog"
    with torch.no_grad():
        expected = model(images, captions=[caption] * len(images.image_sizes))
    path = tmp_path / "prompt.pth"
    save_prompt(model, str(path), [caption])

    fresh = copy.deepcopy(model)
    fresh.rpn.tunable_linear = None  # a model built without the offset: load_prompt adds it
    assert load_prompt(fresh, str(path)) == [caption]
    assert fresh.language_backbone.body is None
    assert fresh.freeze_policy.freeze_language and not fresh.rpn.tunable_linear.weight.requires_grad
    fresh.eval()
    with torch.no_grad():
        got = fresh(images, captions=[caption] * len(images.image_sizes))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.bbox, b.bbox)
        torch.testing.assert_close(a.get_field("scores"), b.get_field("scores"), rtol=1e-4, atol=1e-6)
    with pytest.raises(KeyError):
        fresh(images, captions=["a caption never tuned"] * len(images.image_sizes))


def test_prepare_model_caches_language_only_when_frozen(tiny):
    from glip.engine.finetune import prepare_model
    from glip.engine.prompt_tuning import CachedLanguageBackbone, cache_language_backbone

    model = tiny["model"]
    original = model.language_backbone
    try:
        full = tiny_config_for(tiny, "full")
        model.set_freeze_policy(TUNING_MODES["full"])
        assert prepare_model(full, model) is model
        assert model.language_backbone is original
        with pytest.raises(ValueError, match="LANGUAGE_BACKBONE.FREEZE"):
            cache_language_backbone(model)
        v2 = tiny_config_for(tiny, "language_prompt_v2")
        trainable = model.set_freeze_policy(TUNING_MODES["language_prompt_v2"])
        assert trainable == ["rpn.tunable_linear.weight"]
        assert prepare_model(v2, model) is model
        assert isinstance(model.language_backbone, CachedLanguageBackbone)
        assert model.language_backbone.body is original.body
        assert not any(m.training for m in model.train().language_backbone.modules())
        assert set(model.state_dict()) == set(tiny["initial"])  # checkpoint keys unchanged
    finally:
        model.language_backbone = original
