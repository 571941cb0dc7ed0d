"""The reference goldens' deterministic weight-fill rule (see tests/fixtures/README.md).

Every floating-point tensor of a state dict is generated from its own key and shape, so missing or extra keys
never shift the values of the others. Integer buffers and anchors keep the value the model constructor gave.
"""
import math
import zlib

import torch

KEPT_LAST_NAMES = {"relative_position_index", "position_ids", "num_batches_tracked", "token_type_ids"}


def fill_value(key: str, shape, dtype: torch.dtype, salt: str = ""):
    """The golden value of one state-dict entry, or None where the model-computed value is kept."""
    name = key[len("module."):] if key.startswith("module.") else key
    last = name.split(".")[-1]
    if not dtype.is_floating_point or last in KEPT_LAST_NAMES or "cell_anchors" in name.split("."):
        return None
    shape = tuple(shape)
    gen = torch.Generator().manual_seed(zlib.crc32((name + salt).encode("utf-8")))
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    if last == "log_scale":
        return torch.full(shape, -2.5)
    if last == "bias0":
        return torch.full(shape, -3.0)
    if last == "scale":
        return torch.full(shape, 1.0)
    if last.startswith("gamma"):
        return 0.1 + 0.02 * z
    if last == "relative_position_bias_table":
        return 0.02 * z
    if len(shape) == 1 and last == "weight":
        return 1.0 + 0.02 * z
    if len(shape) == 1:
        return 0.02 * z
    fan_in = math.prod(shape[1:])
    return 0.5 * z / math.sqrt(fan_in)


def filled_state_dict(module: torch.nn.Module, prefix: str = "", salt: str = "") -> dict:
    """The module's state dict with every fillable entry replaced by its golden value.

    `prefix` is the module's key prefix inside the full GLIP model (e.g. "rpn.head.dyhead_tower.0."), because the
    seeds come from the full key.
    """
    out = {}
    for key, value in module.state_dict().items():
        new = fill_value(prefix + key, value.shape, value.dtype, salt)
        out[key] = value.clone() if new is None else new.to(value.dtype)
    return out


def fill_(module: torch.nn.Module, prefix: str = "", salt: str = "") -> torch.nn.Module:
    """Load the golden fill into `module` in place (strict) and return it."""
    module.load_state_dict(filled_state_dict(module, prefix, salt), strict=True)
    return module
