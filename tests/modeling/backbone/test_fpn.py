"""FPN with identity convolutions: check the top-down sums, nearest upsampling, P6/P7 and DropBlock placement."""
import torch
from torch import nn

from glip.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7


def _identity_(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                k = m.weight.shape[-1] // 2
                for c in range(min(m.weight.shape[0], m.weight.shape[1])):
                    m.weight[c, c, k, k] = 1.0
                m.bias.zero_()
    return module


def _nearest(x, size):
    """Nearest upsampling by hand: source index floor(i * in / out)."""
    h, w = x.shape[-2:]
    rows = [(i * h) // size[0] for i in range(size[0])]
    cols = [(j * w) // size[1] for j in range(size[1])]
    return x[..., rows, :][..., cols]


def test_keys_skip_zero_channel_levels():
    fpn = FPN([0, 8, 16, 32], 4, top_blocks=LastLevelP6P7(4, 4))
    keys = set(fpn.state_dict())
    assert keys == {f"{b}{i}.{p}" for b in ("fpn_inner", "fpn_layer") for i in (2, 3, 4) for p in ("weight", "bias")} \
        | {f"top_blocks.{n}.{p}" for n in ("p6", "p7") for p in ("weight", "bias")}
    assert fpn.top_blocks.use_P5


def test_top_down_pathway_by_hand():
    fpn = _identity_(FPN([0, 1, 1, 1], 1, top_blocks=LastLevelP6P7(1, 1))).eval()
    c2 = torch.randn(1, 1, 26, 38)
    c3, c4, c5 = torch.randn(1, 1, 13, 19), torch.randn(1, 1, 7, 10), torch.randn(1, 1, 4, 5)
    outs = fpn([c2, c3, c4, c5])
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)]
    p5 = c5
    p4 = c4 + _nearest(p5, (7, 10))
    p3 = c3 + _nearest(p4, (13, 19))
    p6 = p5[..., ::2, ::2]
    p7 = p6.relu()[..., ::2, ::2]
    for got, want in zip(outs, [p3, p4, p5, p6, p7]):
        torch.testing.assert_close(got, want)


def test_max_pool_top_block_and_all_levels():
    fpn = _identity_(FPN([1, 1], 1, top_blocks=LastLevelMaxPool())).eval()
    c1, c2 = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4)
    outs = fpn([c1, c2])
    torch.testing.assert_close(outs[0], c1 + c2.repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(outs[2], c2[..., ::2, ::2])


class _Spy(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.zeros_like(x)


def test_drop_block_only_in_training_before_output_conv():
    spy = _Spy()
    fpn = _identity_(FPN([0, 1, 1, 1], 1, top_blocks=LastLevelP6P7(1, 1), drop_block=spy))
    feats = [torch.randn(1, 1, 16, 16), torch.randn(1, 1, 8, 8), torch.randn(1, 1, 4, 4), torch.randn(1, 1, 2, 2)]
    fpn.eval()
    outs = fpn(feats)
    assert spy.calls == 0 and outs[0].abs().sum() > 0
    fpn.train()
    outs = fpn(feats)
    # applied to the merged P4 and P3 maps (not to P5), output convs then see zeros
    assert spy.calls == 2
    assert outs[0].abs().sum() == 0 and outs[1].abs().sum() == 0
    torch.testing.assert_close(outs[2], feats[3])
