"""Exponential moving average of a model's weights (``SOLVER.MODEL_EMA``), as the reference's ModelEma."""
import copy
import logging
from collections import OrderedDict

import torch

logger = logging.getLogger(__name__)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (the model itself otherwise)."""
    return model.module if hasattr(model, "module") else model


class ModelEma:
    """A frozen eval-mode copy ``ema`` of the model, updated after each step for every state-dict entry
    (parameters AND buffers, e.g. BN running stats and integer counters) as
    ``ema_v <- ema_v * decay + (1 - decay) * model_v``.

    ``device`` (optional) keeps the copy elsewhere (e.g. "cpu" while training on GPU).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, device=None):
        self.ema = copy.deepcopy(unwrap_model(model))
        self.ema.eval()
        self.decay = decay
        self.device = device
        if device:
            self.ema.to(device=device)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        current = unwrap_model(model).state_dict()
        for key, ema_v in self.ema.state_dict().items():
            model_v = current[key].detach()
            if self.device:
                model_v = model_v.to(device=self.device)
            ema_v.copy_(ema_v * self.decay + (1.0 - self.decay) * model_v)

    def state_dict(self):
        return self.ema.state_dict()

    def load_state_dict(self, state_dict):
        """Load EMA weights saved with or without the ``module.`` prefix of a wrapped model."""
        cleaned = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v)
                              for k, v in state_dict.items())
        self.ema.load_state_dict(cleaned)

    def load_checkpoint(self, checkpoint):
        """Restore from a checkpoint dict (or path) holding ``model_ema``; no-op when it has none."""
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if "model_ema" in checkpoint:
            self.load_state_dict(checkpoint["model_ema"])
        else:
            logger.info("checkpoint holds no 'model_ema'; the EMA starts from the current weights")
