"""Switch a GLIP model's dropout off through the modules' own attributes (no torch function is replaced).

Dropout lives in `nn.Dropout.p` (BERT, the head's text layers, Swin) and in the fusion attention's float
`BiMultiHeadAttention.dropout`; with probability 0 both are the identity and draw no random numbers, exactly as
if dropout were not there (the set-up of the reference's training goldens). Stochastic depth (`DropPath` /
`DropBlock2D.drop_prob`) is left alone unless `drop_path=True`: the goldens that need it off set it off in the
config (MODEL.SWINT.DROP_PATH_RATE 0, MODEL.FPN.DROP_BLOCK False).
"""
import contextlib
from typing import List, Optional, Tuple

import torch
from torch import nn

from glip.modeling.head.fusion import BiMultiHeadAttention


def _own_attributes(module: nn.Module, drop_path: bool) -> List[str]:
    if isinstance(module, nn.Dropout):
        return ["p"]
    if isinstance(module, BiMultiHeadAttention):
        return ["dropout"]
    if drop_path and isinstance(getattr(module, "drop_prob", None), float):
        return ["drop_prob"]
    return []


def _zero_own(module: nn.Module, drop_path: bool) -> List[Tuple[nn.Module, str, float]]:
    """Zero the module's own stochastic attributes (not its children's); returns what was non-zero."""
    saved = []
    for name in _own_attributes(module, drop_path):
        value = getattr(module, name)
        if value != 0.0:
            saved.append((module, name, value))
            setattr(module, name, 0.0)
    return saved


def _restore(saved: List[Tuple[nn.Module, str, float]]) -> None:
    for module, name, value in reversed(saved):
        setattr(module, name, value)


def zero_dropout_(model: nn.Module, drop_path: bool = False) -> List[Tuple[nn.Module, str, float]]:
    """Set every dropout probability of `model` to 0 in place; returns `(module, attribute, old value)` rows."""
    saved = []
    for module in model.modules():
        saved += _zero_own(module, drop_path)
    return saved


@contextlib.contextmanager
def no_dropout(model: Optional[nn.Module] = None, drop_path: bool = False):
    """Dropout off inside the block, restored after it.

    With `model`: its modules. Without: every module that runs inside the block (a model a tool builds and
    trains in this process), through a forward pre-hook that zeroes each module's own probability before it runs.
    """
    if model is not None:
        saved = zero_dropout_(model, drop_path)
        try:
            yield model
        finally:
            _restore(saved)
        return
    saved = []

    def zero_before_forward(module, args):  # returns None: the call's inputs stay as they are
        saved.extend(_zero_own(module, drop_path))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(zero_before_forward)
    try:
        yield
    finally:
        handle.remove()
        _restore(saved)


def no_dropout_in_process(drop_path: bool = False) -> None:
    """`no_dropout()` for the rest of this process (worker and launcher scripts of subprocess tests)."""
    def zero_before_forward(module, args):  # returns None: the call's inputs stay as they are
        _zero_own(module, drop_path)

    torch.nn.modules.module.register_module_forward_pre_hook(zero_before_forward)
