"""Mixed precision for the training loop: which autocast dtype to use and whether a GradScaler is needed.

``SOLVER.USE_AMP`` on CUDA means float16 autocast with a GradScaler (the reference's setting). On CPU the
default is to train in float32 even with ``USE_AMP``: bfloat16 autocast is slower than float32 on CPUs without
native bf16 support; ask for it explicitly with ``dtype=torch.bfloat16`` (no scaler is needed for bf16).
"""
import contextlib
import logging
from typing import Optional

import torch

logger = logging.getLogger(__name__)


def resolve_amp_dtype(device, use_amp: bool, dtype: Optional[torch.dtype] = None) -> Optional[torch.dtype]:
    """Autocast dtype for ``device``, or None for plain float32."""
    if not use_amp:
        return None
    device_type = torch.device(device).type
    if dtype is not None:
        return dtype
    if device_type == "cuda":
        return torch.float16
    logger.info("USE_AMP on %s: training in float32 (pass dtype=torch.bfloat16 to autocast)", device_type)
    return None


def autocast(device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device`` with ``dtype``; a null context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_grad_scaler(device, dtype: Optional[torch.dtype]) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for float16 autocast (loss scaling against underflow); None otherwise."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)
