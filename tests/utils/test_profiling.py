"""glip.utils.profiling: stage timing hooks, counted FLOPs (with deformable convs), GEMM rate, benchmark dict."""
import json
import time

import pytest
import torch
from torch import nn

from glip.layers.deform_conv import ModulatedDeformConv
from glip.utils import profiling


class _Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class _Body(nn.Module):
    """Linear 8->4 on (B, 8), then a 4->6 3x3 DCNv2 on a (B, 4, 5, 7) map."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.dcn = ModulatedDeformConv(4, 6, 3, padding=1)

    def forward(self, x, fmap):
        offset = torch.zeros(fmap.shape[0], 18, *fmap.shape[-2:])
        mask = torch.full((fmap.shape[0], 9, *fmap.shape[-2:]), 0.5)
        return self.linear(x), self.dcn(fmap, offset, mask)


class _ToyDetector(nn.Module):
    """Has `backbone.body` and `rpn.box_selector_test` like a GLIP model; called as model(images, captions=...)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = _Body()
        self.rpn = nn.Module()
        self.rpn.box_selector_test = _Sleep(0.01)
        self.calls = []

    def forward(self, images, captions=None, positive_map=None):
        self.calls.append((tuple(images.shape), list(captions), positive_map))
        b, _, h, w = images.shape
        lin, _ = self.backbone.body(images.mean(dim=(2, 3)).repeat(1, 3)[:, :8], images[:, :1].repeat(1, 4, 1, 1))
        return self.rpn.box_selector_test(lin)


def test_stage_timer_measures_each_named_module():
    model = nn.Sequential(_Sleep(0.02), _Sleep(0.05))
    with profiling.StageTimer([("a", model[0]), ("b", model[1]), ("all", model)]) as timer:
        model(torch.zeros(1))
    assert 0.015 < timer.seconds["a"] < timer.seconds["b"] < timer.seconds["all"]
    assert timer.seconds["all"] >= timer.seconds["a"] + timer.seconds["b"]
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks  # hooks removed on exit


def test_deform_conv_counted_as_convolution():
    body = _Body()
    x, fmap = torch.randn(3, 8), torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        total, per_stage, _ = profiling.count_flops(body, lambda: body(x, fmap), [("dcn", body.dcn), ("all", body)])
    linear = 2 * 3 * 8 * 4
    dcn = 2 * 2 * 6 * 4 * 9 * 5 * 7  # 2 * B * C_out * C_in * kh * kw * Ho * Wo
    assert per_stage["dcn"] == dcn
    assert total == per_stage["all"] == linear + dcn


@pytest.mark.parametrize("blocked", [False, True])
def test_fusion_attention_counted_in_reference_formulation(blocked):
    from glip.modeling.head.fusion import BiMultiHeadAttention

    attn = BiMultiHeadAttention(v_dim=16, l_dim=24, embed_dim=32, num_heads=2).eval()
    attn.blocked_inference = blocked
    v, l = torch.randn(2, 11, 16), torch.randn(2, 5, 24)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        total, _, executed = profiling.count_flops(attn, lambda: attn(v, l, attention_mask_l=mask))
    # six projections + three (B, N, T, embed) products, counted by hand
    expected = 2 * 2 * (3 * 11 * 16 * 32 + 3 * 5 * 24 * 32 + 3 * 11 * 5 * 32)
    assert total == expected
    if blocked:
        assert executed < expected  # the re-associated inference path runs fewer FLOPs
    else:
        assert executed == expected  # the batched path is exactly the reference formulation


def test_gemm_rate_and_rss_are_positive():
    assert profiling.gemm_gflops(size=128, runs=2) > 0
    assert profiling.peak_rss_mb() > 10


def test_model_stages_of_a_glip_like_model():
    names = [name for name, _ in profiling.model_stages(_ToyDetector())]
    assert names == ["backbone", "postprocess"]


def test_benchmark_model_reports_the_agreed_keys():
    model = _ToyDetector()
    result = profiling.benchmark_model(size_hw=(16, 24), runs=3, warmup=1, threads=1, batch_size=2, model=model,
                                       caption="a cat", positive_map={1: [1, 2]}, gemm_size=64)
    assert len(model.calls) == 1 + 3 + 1  # warm-up, timed runs, FLOP count
    assert model.calls[0] == ((2, 3, 16, 24), ["a cat", "a cat"], {1: [1, 2]})
    for key in ("median_seconds", "gflop", "gemm_gflops", "efficiency", "peak_rss_mb", "stages"):
        assert key in result
    assert result["median_seconds"] == sorted(result["seconds"])[1]
    assert result["per_image_seconds"] == pytest.approx(result["median_seconds"] / 2)
    assert set(result["stages"]) == {"backbone", "postprocess"}
    assert 0.01 <= result["stages"]["postprocess"] < result["median_seconds"]
    expected = 2 * 2 * 8 * 4 + 2 * 2 * 6 * 4 * 9 * 16 * 24
    assert result["gflop"] == pytest.approx(expected / 1e9)
    assert result["efficiency"] == pytest.approx(result["gflop"] / (result["median_seconds"] * result["gemm_gflops"]))
    json.dumps(result)  # JSON-ready


def test_coco_prompt_maps_all_80_classes():
    caption, positive_map = profiling.coco_prompt()
    assert caption.startswith("person. bicycle. car.") and caption.endswith("hair drier. toothbrush")
    assert sorted(positive_map) == list(range(1, 81))
    assert positive_map[1] == [1] and positive_map[10] == [19, 20] and positive_map[80] == [191, 192]


@pytest.mark.slow
def test_benchmark_glip_tiny_320():
    from helpers.glip_model import golden_glip_tiny

    result = profiling.benchmark_model(size_hw=(320, 512), runs=1, warmup=0, model=golden_glip_tiny())
    tower = [name for name in result["stages"] if name.startswith("tower.")]
    assert len(tower) == 18 and "predictors" in result["stages"]
    assert 250 < result["gflop"] < 350  # ~288 GFLOP counted with the reference formulation
    assert 0 < result["efficiency"] < 1.5


def test_window_attention_counted_with_and_without_fused_kernel():
    from glip.modeling.backbone.swin import WindowAttention

    attn = WindowAttention(dim=8, window_size=2, num_heads=2).eval()
    x = torch.randn(3, 4, 8)
    expected = 2 * 3 * (4 * 8 * 24 + 4 * 8 * 8 + 2 * 4 * 4 * 8)  # qkv, proj, q k^T and attn @ v by hand
    counts = []
    for grad in (False, True):  # fused SDPA at inference, explicit products with autograd
        with torch.set_grad_enabled(grad):
            counts.append(profiling.count_flops(attn, lambda: attn(x))[0])
    assert counts == [expected, expected]


def test_onednn_operators_of_cpu_gemm_are_counted():
    """The fused fc1 + GELU (oneDNN convolution with a post-op) and t_matmul (oneDNN matmul) count as products."""
    from glip.layers import cpu_gemm

    x, w, b = torch.randn(100, 16), torch.randn(24, 16), torch.randn(24)
    a, m = torch.randn(100, 6), torch.randn(100, 70)
    with torch.no_grad():
        fused = profiling.count_flops(nn.Identity(), lambda: cpu_gemm.linear_gelu(x, w, b))[0]
        t_mat = profiling.count_flops(nn.Identity(), lambda: cpu_gemm.t_matmul(a, m))[0]
    assert (fused, t_mat) == (2 * 100 * 16 * 24, 2 * 100 * 6 * 70)


def test_median_seconds_times_each_run_after_the_warmup(monkeypatch):
    calls = []
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # runs of 1, 3 and 2 seconds
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: next(ticks))
    assert profiling.median_seconds(lambda: calls.append(1), runs=3, warmup=2) == 2.0
    assert len(calls) == 5
