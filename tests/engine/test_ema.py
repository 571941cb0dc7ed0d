"""ModelEma: update rule on parameters and buffers, wrapped models, state round trip."""
import torch
from torch import nn

from glip.engine.ema import ModelEma


class _Wrapped(nn.Module):
    """Stands in for DistributedDataParallel: the model under ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_update_rule_on_parameters_and_buffers():
    model = _model()
    ema = ModelEma(model, decay=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update(model)
    got = ema.state_dict()
    assert torch.allclose(got["0.weight"], 0.9 * before["0.weight"] + 0.1 * (before["0.weight"] + 1.0))
    assert torch.allclose(got["1.running_mean"], torch.full((2,), 0.2))
    assert torch.equal(got["0.bias"], before["0.bias"])
    ema.update(model)  # second step: 0.9 * 0.2 + 0.1 * 2
    assert torch.allclose(ema.state_dict()["1.running_mean"], torch.full((2,), 0.38))


def test_wrapped_model_and_prefixed_state():
    model = _model()
    ema = ModelEma(_Wrapped(model), decay=0.5)
    assert "0.weight" in ema.state_dict()
    with torch.no_grad():
        model[0].bias.fill_(4.0)
    ema.update(_Wrapped(model))
    expected = ema.state_dict()["0.bias"].clone()
    other = ModelEma(_model(), decay=0.5)
    other.load_checkpoint({"model_ema": {"module." + k: v for k, v in ema.state_dict().items()}})
    assert torch.equal(other.state_dict()["0.bias"], expected)
