"""A toy detection-like model and loader for the training loop (tests of glip.engine.trainer / hooks)."""
import dataclasses

import torch
from torch import nn

from glip.config import cfg as default_cfg
from glip.data.collate import Batch
from glip.engine.checkpointer import Checkpointer
from glip.engine.trainer import do_train, train_options
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
    ``draws_seed``: making an iterator draws one number from the global torch RNG, as torch's DataLoader does
    (its workers' base seed).
    """

    def __init__(self, num_iters, start_iter=0, batch_size=2, nan_at=None, crash_at=None, draws_seed=False):
        self.num_iters, self.start_iter, self.batch_size = num_iters, start_iter, batch_size
        self.nan_at, self.crash_at, self.draws_seed = nan_at, crash_at, draws_seed

    def __len__(self):
        return self.num_iters

    def __iter__(self):
        if self.draws_seed:
            torch.empty((), dtype=torch.int64).random_()
        return self._batches()

    def _batches(self):
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


def toy_cfg(max_iter=6):
    """AdamW with warm-up, one milestone, EMA and full-model gradient clipping, on the CPU."""
    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    s = cfg.SOLVER
    s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.MAX_ITER = "ADAMW", 0.01, 0.05, max_iter
    s.WARMUP_ITERS, s.WARMUP_FACTOR, s.STEPS = 2, 0.5, (0.5,)
    s.MODEL_EMA = 0.9
    s.CLIP_GRADIENTS.ENABLED, s.CLIP_GRADIENTS.CLIP_VALUE = True, 0.05
    return cfg


def toy_options(cfg, period, **settings):
    """The loop settings of ``cfg`` for ``SOLVER.MAX_ITER`` iterations, checkpoints every ``period``."""
    return dataclasses.replace(train_options(cfg, cfg.SOLVER.MAX_ITER), checkpoint_period=period, **settings)


def toy_setup(cfg, out_dir, seed=0, model_cls=ToyDetector):
    """(model, optimizer, scheduler, checkpointer writing to ``out_dir``), the model initialised from ``seed``."""
    torch.manual_seed(seed)
    model = model_cls()
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(out_dir), save_to_disk=True)
    return model, optimizer, scheduler, checkpointer


def toy_run(cfg, out_dir, seed=0, period=2, model_cls=ToyDetector, **loader_kwargs):
    """A run as the tools make it: resumed from ``out_dir``'s last checkpoint if there is one, else from
    ``seed``'s initialisation (data from seed ``1000 + seed``). Returns (model, optimizer, scheduler,
    checkpointer, arguments)."""
    model, optimizer, scheduler, checkpointer = toy_setup(cfg, out_dir, seed, model_cls)
    arguments = {"iteration": 0}
    arguments.update(checkpointer.load())
    if not arguments.get("iteration"):
        torch.manual_seed(1000 + seed)
    loader = ToyLoader(cfg.SOLVER.MAX_ITER, start_iter=arguments["iteration"], **loader_kwargs)
    do_train(model, loader, optimizer, scheduler, checkpointer, torch.device("cpu"), arguments, toy_options(cfg, period))
    return model, optimizer, scheduler, checkpointer, arguments
