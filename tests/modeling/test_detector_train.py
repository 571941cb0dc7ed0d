"""Train-mode GLIP-T parity: the loss dict and gradient norms of the reference (train_losses.pt)."""
import math

import pytest
import torch

from helpers import load_golden
from helpers.glip_model import golden_glip_tiny, golden_train_batch
from helpers.stochastic import no_dropout


@pytest.fixture(scope="module")
def train_step():
    golden = load_golden("train_losses.pt")
    model = golden_glip_tiny()
    model.train()
    try:
        images, targets = golden_train_batch(golden)
        assert tuple(images.tensors.shape) == tuple(golden["batch_input_shape"])
        with no_dropout(model, drop_path=True):  # every train-mode stochastic layer off
            losses = model(images, targets=targets, captions=golden["captions"],
                           positive_map=golden["positive_map"])
            sum(losses.values()).backward()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        frozen = sorted(name for name, p in model.named_parameters() if not p.requires_grad)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return golden, {k: v.detach() for k, v in losses.items()}, grads, frozen


def test_loss_dict_matches_reference(train_step):
    golden, losses, _, _ = train_step
    assert set(losses) == set(golden["loss_dict"])
    for name, ref in golden["loss_dict"].items():
        assert float(losses[name]) == pytest.approx(float(ref), rel=1e-4, abs=1e-6), name


def test_gradient_norms_match_reference(train_step):
    golden, _, grads, frozen = train_step
    assert frozen == sorted(golden["frozen_params"])
    for name, ref in golden["grad_norms"].items():
        ours = grads[name].double().norm().item() if name in grads else 0.0
        assert ours == pytest.approx(ref, rel=1e-2, abs=1e-6), name
    total = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads.values()))
    assert total == pytest.approx(golden["total_grad_norm_all_params"], rel=1e-2)
    for name, ref in golden["grads_small"].items():
        torch.testing.assert_close(grads[name], ref, rtol=1e-2, atol=1e-5)
