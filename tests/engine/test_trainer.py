"""do_train with a toy detection-like model and loader: losses, checkpoints, exact resume, NaN handling."""
import logging
import math
import os

import pytest
import torch
from helpers.toy_training import ToyLoader, toy_cfg, toy_options, toy_run, toy_setup

from glip.engine.trainer import NonFiniteLossError, do_train, train_options
from glip.structures.bounding_box import BoxList


def test_training_writes_reference_layout_and_lowers_loss(tmp_path, caplog):
    cfg = toy_cfg(max_iter=6)
    with caplog.at_level(logging.INFO, logger="glip.trainer"):
        model, optimizer, scheduler, checkpointer, arguments = toy_run(cfg, tmp_path, period=4)
    assert arguments["iteration"] == 6 and len(model.calls) == 6 and scheduler.last_epoch == 6
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 6 and "model_ema" in final
    assert any("eta: " in r.message and "iter: 6" in r.message and "loss_reg" in r.message for r in caplog.records)
    # lr after 6 iterations: warmup over, one milestone (round(0.5 * 6) = 3) passed
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1)


@pytest.mark.parametrize("draws_seed", [False, True])
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, draws_seed):
    """Also when making the loader's iterator draws from the global RNG (torch's DataLoader; dropout is on)."""
    cfg = toy_cfg(max_iter=6)
    full, *_ = toy_run(cfg, tmp_path / "full", draws_seed=draws_seed)
    ema_full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["model_ema"]

    with pytest.raises(RuntimeError, match="simulated crash"):
        toy_run(cfg, tmp_path / "split", crash_at=5, draws_seed=draws_seed)
    assert (tmp_path / "split" / "last_checkpoint").read_text() == "model_0000004.pth"
    # a fresh process would start from another seed: the checkpoint must restore everything
    resumed, _, scheduler, _, arguments = toy_run(cfg, tmp_path / "split", seed=123, draws_seed=draws_seed)
    assert arguments["iteration"] == 6 and scheduler.last_epoch == 6
    assert resumed.calls == full.calls[4:]
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    ema_resumed = torch.load(tmp_path / "split" / "model_final.pth", weights_only=True)["model_ema"]
    for key, value in ema_full.items():
        assert torch.equal(value, ema_resumed[key]), key


def test_interrupted_losses_match_prefix(tmp_path):
    cfg = toy_cfg(max_iter=6)
    full, *_ = toy_run(cfg, tmp_path / "a")
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path / "b")
    torch.manual_seed(1000)
    with pytest.raises(RuntimeError):
        do_train(model, ToyLoader(6, crash_at=5), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                 toy_options(cfg, 2))
    assert model.calls == full.calls[:4]


def test_nan_loss_stops_with_named_error_without_stepping(tmp_path):
    cfg = toy_cfg(max_iter=3)
    cfg.SOLVER.MODEL_EMA, cfg.SOLVER.STEPS = 0.0, (100,)  # same schedule for the 1- and 3-iteration runs
    one_step, *_ = toy_run(_cfg_one(cfg), tmp_path / "one")
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path / "nan")
    torch.manual_seed(1000)
    with pytest.raises(NonFiniteLossError, match=r"iteration 2: .*loss_reg=nan") as err:
        do_train(model, ToyLoader(3, nan_at=2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                 toy_options(cfg, 10))
    assert err.value.iteration == 2 and set(err.value.loss_terms) == {"loss_reg", "loss_dot_product_token"}
    for key, value in one_step.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def _cfg_one(cfg):
    one = cfg.clone()
    one.SOLVER.MAX_ITER = 1
    return one


def test_nan_loss_skipped_when_asked(tmp_path):
    cfg = toy_cfg(max_iter=3)
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    torch.manual_seed(1000)
    do_train(model, ToyLoader(3, nan_at=2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             toy_options(cfg, 10, skip_nonfinite=True))
    assert math.isnan(model.calls[1]) and len(model.calls) == 3 and scheduler.last_epoch == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_trainer_clips_through_the_optimizer(tmp_path):
    """With SGD (lr 1, no momentum/decay) the first update is the gradient scaled to the clip norm."""
    cfg = toy_cfg(max_iter=1)
    s = cfg.SOLVER
    s.OPTIMIZER, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS = "SGD", 1.0, 0.0, 0.0, 0.0
    s.BIAS_LR_FACTOR, s.WARMUP_ITERS, s.MODEL_EMA, s.STEPS = 1.0, 0, 0.0, (10,)
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    model.dropout.p = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    do_train(model, ToyLoader(1), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0}, toy_options(cfg, 10))
    update = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert update.norm().item() == pytest.approx(0.05, rel=1e-4)


def test_val_fn_and_tensorboard_writer(tmp_path):
    cfg = toy_cfg(max_iter=4)
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    seen, scalars = [], []

    class Writer:
        def add_scalar(self, name, value, step):
            scalars.append((name, step))

    def val_fn(m, iteration):
        seen.append((iteration, m.training))
        return 0.25

    arguments = do_train(model, ToyLoader(4), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                         toy_options(cfg, 2), val_fn=val_fn, tb_writer=Writer())
    assert seen == [(2, False), (4, False)] and model.training and arguments["eval_result"] == 0.25
    assert ("loss_reg", 1) in scalars and ("lr", 4) in scalars and ("loss", 3) in scalars


def test_bf16_autocast_on_cpu_when_asked(tmp_path):
    cfg = toy_cfg(max_iter=2)
    cfg.SOLVER.USE_AMP = True
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    dtypes = []
    model.rpn.head.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    do_train(model, ToyLoader(2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             toy_options(cfg, 10, amp_dtype=torch.bfloat16))
    assert dtypes == [torch.bfloat16, torch.bfloat16] and checkpointer.scaler is None
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Detected call of")  # GradScaler skips the first step on overflow
def test_float16_autocast_uses_a_saved_grad_scaler(tmp_path):
    cfg = toy_cfg(max_iter=2)
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    do_train(model, ToyLoader(2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             toy_options(cfg, 10, use_amp=True, amp_dtype=torch.float16))
    assert isinstance(checkpointer.scaler, torch.amp.GradScaler)
    assert "scaler" in torch.load(tmp_path / "model_final.pth", weights_only=True)


def test_batches_with_too_many_negatives_are_skipped(tmp_path):
    cfg = toy_cfg(max_iter=3)

    class NegativeLoader(ToyLoader):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == 1:
                    empty = BoxList(torch.zeros(0, 4), (10, 10))
                    empty.add_field("caption", "nothing")
                    batch = batch._replace(targets=(batch.targets[0], empty))
                yield batch

    model, optimizer, scheduler, checkpointer = toy_setup(cfg, tmp_path)
    do_train(model, NegativeLoader(3), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             toy_options(cfg, 10))
    assert len(model.calls) == 2 and scheduler.last_epoch == 2


def test_train_options_take_the_checkpoint_period_in_epochs_when_asked():
    cfg = toy_cfg(max_iter=6)
    cfg.SOLVER.CHECKPOINT_PERIOD = 5
    assert train_options(cfg, max_iter=12).checkpoint_period == 5
    cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.CHECKPOINT_PER_EPOCH = 3, 0.5
    options = train_options(cfg, max_iter=12)  # 12 iterations for 3 epochs: half an epoch is 2 iterations
    assert options.checkpoint_period == 2 and options.max_iter == 12 and options.ema_decay == 0.9
    cfg.SOLVER.CHECKPOINT_PER_EPOCH = 0.1
    assert train_options(cfg, max_iter=12).checkpoint_period == 1  # never below one iteration
