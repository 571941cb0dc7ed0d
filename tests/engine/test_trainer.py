"""do_train with a toy detection-like model and loader: losses, checkpoints, exact resume, NaN handling."""
import dataclasses
import logging
import math
import os

import pytest
import torch
from torch import nn

from glip.config import cfg as default_cfg
from glip.data.collate import Batch
from glip.engine.checkpointer import Checkpointer
from glip.engine.trainer import NonFiniteLossError, do_train, train_options
from glip.solver.build import make_lr_scheduler, make_optimizer
from glip.structures.bounding_box import BoxList


class ToyDetector(nn.Module):
    """Two loss terms from a tiny MLP; dropout draws from the global RNG; records each call's total loss."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = nn.Linear(4, 8)
        self.dropout = nn.Dropout(p=0.3)
        self.rpn = nn.Module()
        self.rpn.head = nn.Linear(8, 3)
        self.calls = []

    def forward(self, images, targets=None, captions=None, positive_map=None):
        assert len(captions) == len(targets) == images.shape[0]
        out = self.rpn.head(self.dropout(torch.relu(self.backbone.body(images))))
        boxes = torch.stack([t.bbox.mean(0) for t in targets])
        losses = {"loss_reg": (out[:, :2] - boxes[:, :2]).pow(2).mean(),
                  "loss_dot_product_token": out[:, 2].sigmoid().mean() * positive_map.sum() / positive_map.numel()}
        self.calls.append(sum(losses.values()).item())
        return losses


class ToyLoader:
    """Collator-style batches for iterations ``start_iter + 1 .. num_iters``, drawn from the global RNG.

    ``nan_at``: images of that iteration are NaN; ``crash_at``: raise before yielding that iteration.
    """

    def __init__(self, num_iters, start_iter=0, batch_size=2, nan_at=None, crash_at=None):
        self.num_iters, self.start_iter, self.batch_size = num_iters, start_iter, batch_size
        self.nan_at, self.crash_at = nan_at, crash_at

    def __len__(self):
        return self.num_iters

    def __iter__(self):
        for it in range(self.start_iter + 1, self.num_iters + 1):
            if it == self.crash_at:
                raise RuntimeError("simulated crash before iteration {}".format(it))
            images = torch.randn(self.batch_size, 4)
            if it == self.nan_at:
                images[0, 0] = float("nan")
            targets = []
            for _ in range(self.batch_size):
                target = BoxList(torch.rand(2, 4) * 10, (10, 10))
                target.add_field("caption", "a cat. a dog.")
                targets.append(target)
            positive_map = torch.zeros(2 * self.batch_size, 256)
            positive_map[:, 1] = 1.0
            yield Batch(images, tuple(targets), tuple(range(self.batch_size)), positive_map)


def _cfg(max_iter=6):
    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    s = cfg.SOLVER
    s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.MAX_ITER = "ADAMW", 0.01, 0.05, max_iter
    s.WARMUP_ITERS, s.WARMUP_FACTOR, s.STEPS = 2, 0.5, (0.5,)
    s.MODEL_EMA = 0.9
    s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_VALUE = True, 0.05
    return cfg


def _options(cfg, period, **settings):
    """The loop settings of ``cfg`` for ``SOLVER.MAX_ITER`` iterations, checkpoints every ``period``."""
    return dataclasses.replace(train_options(cfg, cfg.SOLVER.MAX_ITER), checkpoint_period=period, **settings)


def _setup(cfg, out_dir, seed=0):
    torch.manual_seed(seed)
    model = ToyDetector()
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(out_dir), save_to_disk=True)
    return model, optimizer, scheduler, checkpointer


def _run(cfg, out_dir, seed=0, period=2, **loader_kwargs):
    model, optimizer, scheduler, checkpointer = _setup(cfg, out_dir, seed)
    arguments = {"iteration": 0}
    arguments.update(checkpointer.load())
    torch.manual_seed(1000 + seed) if not arguments.get("iteration") else None
    loader = ToyLoader(cfg.SOLVER.MAX_ITER, start_iter=arguments["iteration"], **loader_kwargs)
    do_train(model, loader, optimizer, scheduler, checkpointer, torch.device("cpu"), arguments, _options(cfg, period))
    return model, optimizer, scheduler, checkpointer, arguments


def test_training_writes_reference_layout_and_lowers_loss(tmp_path, caplog):
    cfg = _cfg(max_iter=6)
    with caplog.at_level(logging.INFO, logger="glip.trainer"):
        model, optimizer, scheduler, checkpointer, arguments = _run(cfg, tmp_path, period=4)
    assert arguments["iteration"] == 6 and len(model.calls) == 6 and scheduler.last_epoch == 6
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 6 and "model_ema" in final
    assert any("eta: " in r.message and "iter: 6" in r.message and "loss_reg" in r.message for r in caplog.records)
    # lr after 6 iterations: warmup over, one milestone (round(0.5 * 6) = 3) passed
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.1)


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    cfg = _cfg(max_iter=6)
    full, *_ = _run(cfg, tmp_path / "full")
    ema_full = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["model_ema"]

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(cfg, tmp_path / "split", crash_at=5)
    assert (tmp_path / "split" / "last_checkpoint").read_text() == "model_0000004.pth"
    # a fresh process would start from another seed: the checkpoint must restore everything
    resumed, _, scheduler, _, arguments = _run(cfg, tmp_path / "split", seed=123)
    assert arguments["iteration"] == 6 and scheduler.last_epoch == 6
    assert resumed.calls == full.calls[4:]
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    ema_resumed = torch.load(tmp_path / "split" / "model_final.pth", weights_only=True)["model_ema"]
    for key, value in ema_full.items():
        assert torch.equal(value, ema_resumed[key]), key


def test_interrupted_losses_match_prefix(tmp_path):
    cfg = _cfg(max_iter=6)
    full, *_ = _run(cfg, tmp_path / "a")
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path / "b")
    torch.manual_seed(1000)
    with pytest.raises(RuntimeError):
        do_train(model, ToyLoader(6, crash_at=5), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                 _options(cfg, 2))
    assert model.calls == full.calls[:4]


def test_nan_loss_stops_with_named_error_without_stepping(tmp_path):
    cfg = _cfg(max_iter=3)
    cfg.SOLVER.MODEL_EMA, cfg.SOLVER.STEPS = 0.0, (100,)  # same schedule for the 1- and 3-iteration runs
    one_step, *_ = _run(_cfg_one(cfg), tmp_path / "one")
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path / "nan")
    torch.manual_seed(1000)
    with pytest.raises(NonFiniteLossError, match=r"iteration 2: .*loss_reg=nan") as err:
        do_train(model, ToyLoader(3, nan_at=2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                 _options(cfg, 10))
    assert err.value.iteration == 2 and set(err.value.loss_terms) == {"loss_reg", "loss_dot_product_token"}
    for key, value in one_step.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def _cfg_one(cfg):
    one = cfg.clone()
    one.SOLVER.MAX_ITER = 1
    return one


def test_nan_loss_skipped_when_asked(tmp_path):
    cfg = _cfg(max_iter=3)
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    torch.manual_seed(1000)
    do_train(model, ToyLoader(3, nan_at=2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             _options(cfg, 10, skip_nonfinite=True))
    assert math.isnan(model.calls[1]) and len(model.calls) == 3 and scheduler.last_epoch == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_trainer_clips_through_the_optimizer(tmp_path):
    """With SGD (lr 1, no momentum/decay) the first update is the gradient scaled to the clip norm."""
    cfg = _cfg(max_iter=1)
    s = cfg.SOLVER
    s.OPTIMIZER, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS = "SGD", 1.0, 0.0, 0.0, 0.0
    s.BIAS_LR_FACTOR, s.WARMUP_ITERS, s.MODEL_EMA, s.STEPS = 1.0, 0, 0.0, (10,)
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    model.dropout.p = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    do_train(model, ToyLoader(1), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0}, _options(cfg, 10))
    update = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert update.norm().item() == pytest.approx(0.05, rel=1e-4)


def test_val_fn_and_tensorboard_writer(tmp_path):
    cfg = _cfg(max_iter=4)
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    seen, scalars = [], []

    class Writer:
        def add_scalar(self, name, value, step):
            scalars.append((name, step))

    def val_fn(m, iteration):
        seen.append((iteration, m.training))
        return 0.25

    arguments = do_train(model, ToyLoader(4), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
                         _options(cfg, 2), val_fn=val_fn, tb_writer=Writer())
    assert seen == [(2, False), (4, False)] and model.training and arguments["eval_result"] == 0.25
    assert ("loss_reg", 1) in scalars and ("lr", 4) in scalars and ("loss", 3) in scalars


def test_bf16_autocast_on_cpu_when_asked(tmp_path):
    cfg = _cfg(max_iter=2)
    cfg.SOLVER.USE_AMP = True
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    dtypes = []
    model.rpn.head.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    do_train(model, ToyLoader(2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             _options(cfg, 10, amp_dtype=torch.bfloat16))
    assert dtypes == [torch.bfloat16, torch.bfloat16] and checkpointer.scaler is None
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Detected call of")  # GradScaler skips the first step on overflow
def test_float16_autocast_uses_a_saved_grad_scaler(tmp_path):
    cfg = _cfg(max_iter=2)
    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    do_train(model, ToyLoader(2), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0},
             _options(cfg, 10, use_amp=True, amp_dtype=torch.float16))
    assert isinstance(checkpointer.scaler, torch.amp.GradScaler)
    assert "scaler" in torch.load(tmp_path / "model_final.pth", weights_only=True)


def test_batches_with_too_many_negatives_are_skipped(tmp_path):
    cfg = _cfg(max_iter=3)

    class NegativeLoader(ToyLoader):
        def __iter__(self):
            for i, batch in enumerate(super().__iter__()):
                if i == 1:
                    empty = BoxList(torch.zeros(0, 4), (10, 10))
                    empty.add_field("caption", "nothing")
                    batch = batch._replace(targets=(batch.targets[0], empty))
                yield batch

    model, optimizer, scheduler, checkpointer = _setup(cfg, tmp_path)
    do_train(model, NegativeLoader(3), optimizer, scheduler, checkpointer, "cpu", {"iteration": 0}, _options(cfg, 10))
    assert len(model.calls) == 2 and scheduler.last_epoch == 2


def test_train_options_take_the_checkpoint_period_in_epochs_when_asked():
    cfg = _cfg(max_iter=6)
    cfg.SOLVER.CHECKPOINT_PERIOD = 5
    assert train_options(cfg, max_iter=12).checkpoint_period == 5
    cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.CHECKPOINT_PER_EPOCH = 3, 0.5
    options = train_options(cfg, max_iter=12)  # 12 iterations for 3 epochs: half an epoch is 2 iterations
    assert options.checkpoint_period == 2 and options.max_iter == 12 and options.ema_decay == 0.9
    cfg.SOLVER.CHECKPOINT_PER_EPOCH = 0.1
    assert train_options(cfg, max_iter=12).checkpoint_period == 1  # never below one iteration
