"""Parameter groups, optimizer choice, clipping and schedule selection of glip.solver.build."""
import pytest
import torch
from torch import nn

from glip.config import cfg as default_cfg
from glip.solver.build import make_lr_scheduler, make_optimizer, resolve_milestones
from glip.solver.lr_scheduler import WarmupCosineAnnealingLR, WarmupMultiStepLR, WarmupReduceLROnPlateau


class _Named(nn.Module):
    """Holds parameters under given dotted names."""

    def __init__(self, names):
        super().__init__()
        self.tree = nn.Module()
        for name in names:
            module = self.tree
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(torch.zeros(2)))

    def named_parameters(self, *args, **kwargs):
        for name, p in super().named_parameters(*args, **kwargs):
            yield name[len("tree."):], p


NAMES = [
    "backbone.body.layers.0.blocks.0.attn.qkv.weight",
    "backbone.body.layers.0.blocks.0.attn.relative_position_bias_table",
    "backbone.body.layers.0.blocks.0.norm1.weight",
    "backbone.body.layers.0.blocks.0.norm1.bias",
    "backbone.fpn.fpn_inner2.weight",
    "backbone.fpn.fpn_inner2.bias",
    "language_backbone.body.model.encoder.layer.0.attention.output.LayerNorm.weight",
    "language_backbone.body.model.encoder.layer.0.attention.output.dense.bias",
    "language_backbone.body.model.embeddings.word_embeddings.weight",
    "rpn.head.bias_lang",
    "rpn.head.bias0",
    "rpn.head.dyhead_tower.1.layers.0.attention.output.LayerNorm.weight",
    "rpn.head.cls_logits.weight",
]


def _cfg(**solver):
    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.LANG_LR = 0.01
    cfg.SOLVER.BACKBONE_BODY_LR_FACTOR = 0.5
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 3e-5
    cfg.SOLVER.WEIGHT_DECAY_NORM_FACTOR = 0.5
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _groups(optimizer):
    return {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}


def test_param_groups_follow_reference_rules():
    model = _Named(NAMES)
    optimizer = make_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.8), model)
    got = _groups(optimizer)
    wd, wd_bias = 1e-4, 3e-5
    expected = {
        NAMES[0]: (0.05, wd),
        NAMES[1]: (0.1, wd_bias),             # "bias" substring: bias lr factor and bias decay
        NAMES[2]: (0.05, wd * 0.5),           # norm
        NAMES[3]: (0.1, wd_bias * 0.5),       # norm bias: both rules
        NAMES[4]: (0.1, wd),
        NAMES[5]: (0.2, wd_bias),
        NAMES[6]: (0.01, wd * 0.5),           # LayerNorm counts as norm
        NAMES[7]: (0.02, wd_bias),
        NAMES[8]: (0.01, wd),
        NAMES[9]: (0.2, wd_bias),
        NAMES[10]: (0.2, wd_bias),
        NAMES[11]: (0.1, wd * 0.5),
        NAMES[12]: (0.1, wd),
    }
    assert set(got) == set(expected)
    for name, (lr, decay) in expected.items():
        assert got[name] == pytest.approx((lr, decay), rel=1e-12), name
    assert type(optimizer) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 and len(g["params"]) == 1 for g in optimizer.param_groups)


def test_frozen_parameters_are_left_out_and_adamw_defaults():
    model = _Named(NAMES)
    for name, p in model.named_parameters():
        p.requires_grad = not name.startswith("language_backbone")
    optimizer = make_optimizer(_cfg(OPTIMIZER="ADAMW"), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert not any(name.startswith("language_backbone") for name in _groups(optimizer))
    assert len(optimizer.param_groups) == len(NAMES) - 3
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999) and optimizer.param_groups[0]["eps"] == 1e-8


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError):
        make_optimizer(_cfg(OPTIMIZER="LAMB"), _Named(NAMES[:1]))


def _clip_cfg(enabled, value=1.0, clip_type="full_model"):
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, BASE_LR=1.0, BIAS_LR_FACTOR=1.0, WEIGHT_DECAY=0.0,
               WEIGHT_DECAY_BIAS=0.0, BACKBONE_BODY_LR_FACTOR=1.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = enabled
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    return cfg


def _step_with_grads(cfg):
    model = nn.Module()
    model.a = nn.Parameter(torch.tensor([1.0, 1.0]))
    model.b = nn.Parameter(torch.tensor([1.0]))
    optimizer = make_optimizer(cfg, model)
    model.a.grad = torch.tensor([3.0, 0.0])
    model.b.grad = torch.tensor([4.0])  # total norm over all groups: 5
    optimizer.step()
    return model.a.detach(), model.b.detach()


def test_full_model_clipping_scales_total_norm():
    a, b = _step_with_grads(_clip_cfg(True, value=1.0))
    coef = 1.0 / (5.0 + 1e-6)  # clip_grad_norm_ factor max_norm / (norm + 1e-6)
    assert torch.allclose(a, torch.tensor([1 - 3 * coef, 1.0]), atol=1e-7)
    assert torch.allclose(b, torch.tensor([1 - 4 * coef]), atol=1e-7)


@pytest.mark.parametrize("enabled,value,clip_type", [(False, 1.0, "full_model"), (True, 0.0, "full_model"),
                                                     (True, 1.0, "value")])
def test_no_clipping_unless_full_model_with_positive_value(enabled, value, clip_type):
    a, b = _step_with_grads(_clip_cfg(enabled, value, clip_type))
    assert torch.equal(a, torch.tensor([-2.0, 1.0])) and torch.equal(b, torch.tensor([-3.0]))


def test_resolve_milestones_fractions_and_iterations():
    assert resolve_milestones((0.67, 0.89), 90) == [60, 80]
    assert resolve_milestones((0.25,), 10) == [2]  # python round: half to even, as the reference
    assert resolve_milestones((30000, 40000), 90) == [30000, 40000]


def _opt():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)


def test_schedule_selection():
    cfg = _cfg(MAX_ITER=100, STEPS=(0.5, 80), WARMUP_ITERS=7, WARMUP_FACTOR=0.2, WARMUP_METHOD="constant")
    sched = make_lr_scheduler(cfg, _opt())
    assert isinstance(sched, WarmupMultiStepLR) and sched.milestones == [50, 80]
    assert (sched.warmup_iters, sched.warmup_factor, sched.warmup_method) == (7, 0.2, "constant")
    assert make_lr_scheduler(cfg, _opt(), max_iter=10).milestones == [5, 80]
    cfg.SOLVER.USE_COSINE = True
    cos = make_lr_scheduler(cfg, _opt())
    assert isinstance(cos, WarmupCosineAnnealingLR) and cos.max_iters == 100 and cos.eta_min == cfg.SOLVER.MIN_LR
    cfg.SOLVER.USE_COSINE = False
    cfg.SOLVER.USE_AUTOSTEP = True
    cfg.SOLVER.STEP_PATIENCE = 3
    auto = make_lr_scheduler(cfg, _opt())
    assert isinstance(auto, WarmupReduceLROnPlateau) and auto.patience == 3 and auto.mode == "max"


def test_epoch_schedules_take_their_length_from_the_caller():
    # With MAX_EPOCH the length depends on the dataset (glip.data.build.train_iterations): the config's MAX_ITER
    # is not a fallback, and the config is not modified.
    cfg = _cfg(MAX_ITER=100, MAX_EPOCH=2, STEPS=(0.5, 0.75))
    cfg.freeze()
    with pytest.raises(ValueError, match="SOLVER.MAX_EPOCH is 2: pass the schedule length max_iter"):
        make_lr_scheduler(cfg, _opt())
    assert make_lr_scheduler(cfg, _opt(), max_iter=40).milestones == [20, 30]
    assert cfg.SOLVER.MAX_ITER == 100


def test_multi_stage_schedules():
    cfg = _cfg(MULTI_MAX_EPOCH=(2, 4), MULTI_MAX_ITER=(10, 40), STEPS=((0.5,), (0.5, 0.75)))
    scheds = make_lr_scheduler(cfg, _opt())
    assert [s.milestones for s in scheds] == [[5], [20, 30]]


@pytest.mark.parametrize("optimizer_name", ["ADAMW", "SGD"])
def test_fused_step_equals_the_per_group_reference_step(optimizer_name):
    """make_optimizer's fused optimizer takes the same steps as torch's default implementation over the same
    one-group-per-parameter layout (AdamW with weight decay, SGD with momentum), on random gradients."""
    torch.manual_seed(0)
    model = _Named(NAMES)
    for p in model.parameters():
        p.data.normal_()
    reference = _Named(NAMES)
    reference.load_state_dict(model.state_dict())
    cfg = _cfg(OPTIMIZER=optimizer_name, MOMENTUM=0.9)
    fused = make_optimizer(cfg, model)
    assert fused.defaults.get("fused") is True
    groups = [{k: v for k, v in g.items() if k != "fused"} for g in fused.param_groups]
    by_name = dict(reference.named_parameters())
    for g in groups:
        g["params"] = [by_name[g["name"]]]
    plain_cls = torch.optim.AdamW if optimizer_name == "ADAMW" else torch.optim.SGD
    extra = {"momentum": 0.9} if optimizer_name == "SGD" else {}
    plain = plain_cls(groups, cfg.SOLVER.BASE_LR, foreach=False, **extra)
    for _ in range(3):
        for (_, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=name)
