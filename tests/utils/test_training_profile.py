"""glip.utils.training_profile: a training step timed as a whole and stage by stage (forward and backward)."""
import itertools

import torch
from torch import nn

from glip.utils import training_profile


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, x, target):
        return {"loss_a": (self.head(self.body(x)) - target).pow(2).mean(), "loss_b": self.body(x).abs().mean()}


def test_capture_stage_inputs_keeps_detached_leaves_of_the_first_call():
    model = _Toy()
    x = torch.randn(5, 4)
    captured = training_profile.capture_stage_inputs(lambda: model(x, torch.zeros(5, 1)), [("body", model.body)])
    (args, kwargs) = captured["body"]
    assert torch.equal(args[0], x) and args[0] is not x and kwargs == {}
    assert not model.body._forward_pre_hooks  # hook removed


def test_time_stage_counts_forward_and_backward_with_the_given_clock():
    ticks = itertools.count()
    module = nn.Linear(4, 2)
    fwd, bwd = training_profile.time_stage(module, (torch.randn(3, 4),), {}, runs=3, warmup=1,
                                           clock=lambda: float(next(ticks)))
    assert (fwd, bwd) == (1.0, 1.0)  # each phase reads the clock twice in a row: one tick
    assert module.weight.grad is not None


def test_training_step_phases_stages_and_optimizer():
    torch.manual_seed(0)
    model = _Toy()
    batch = {"x": torch.randn(8, 4), "target": torch.randn(8, 1)}
    before = model.head.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = training_profile.benchmark_training_step(model, batch, [("body", model.body), ("head", model.head)],
                                                      runs=2, warmup=1, optimizer=optimizer)
    assert not torch.equal(model.head.weight, before)  # 3 optimizer steps ran
    assert len(result["steps"]) == 2 and result["step"] > 0
    assert set(result["stages"]) == {"body", "head"}
    assert result["rest"]["forward"] == result["forward"] - sum(s["forward"] for s in result["stages"].values())
    assert "whole step" in training_profile.format_training_report(result)


def test_rest_counts_nested_stages_once():
    outer = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    other = nn.Linear(2, 2)
    stages = [("outer", outer), ("outer.0", outer[0]), ("outer.1", outer[1]), ("other", other)]
    assert training_profile._outermost(stages) == {"outer", "other"}
