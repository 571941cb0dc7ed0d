"""DropBlock2D: identity outside training, block masks and rescaling by hand."""
import torch

from glip.modeling.backbone.drop_block import DropBlock2D


def test_identity_in_eval_and_at_zero_probability():
    x = torch.randn(2, 3, 5, 6)
    db = DropBlock2D(0.5, 3).eval()
    assert db(x) is x
    db = DropBlock2D(0.0, 3).train()
    assert db(x) is x


def _keep_mask_by_hand(seeds, block):
    b, h, w = seeds.shape
    keep = torch.ones(b, h, w)
    pad = block // 2
    for n, y, x in seeds.nonzero().tolist():
        # a seed at (y, x) blocks rows y+pad-block+1 .. y+pad (clipped), same for columns
        lo_y, lo_x = max(0, y + pad - block + 1), max(0, x + pad - block + 1)
        keep[n, lo_y:y + pad + 1, lo_x:x + pad + 1] = 0
    return keep


def test_training_drops_blocks_shared_over_channels():
    for block in (3, 2):
        x = torch.randn(2, 4, 9, 11)
        db = DropBlock2D(0.3, block).train()
        torch.manual_seed(7)
        out = db(x)
        torch.manual_seed(7)
        seeds = (torch.rand(2, 9, 11) < 0.3 / block ** 2).float()
        keep = _keep_mask_by_hand(seeds, block)
        assert seeds.sum() > 0
        expected = x * keep[:, None] * keep.numel() / keep.sum()
        torch.testing.assert_close(out, expected)
