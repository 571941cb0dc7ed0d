"""Loading weights into a GLIP model: official GLIP checkpoints as they are, or backbone-only ImageNet files.

Two cases, told apart by the keys:
* a full GLIP checkpoint (`{"model": {"module.backbone.body...": ...}}`, prefix optional): every model key must
  come from the file with its shape. Exceptions, each logged: keys whose shape a task config deliberately
  changes (`cls_logits` when NUM_CLASSES differs; they keep their initialisation), Swin relative-position tables
  of another window size (interpolated, as the reference does), modules a config adds on purpose
  (`allowed_missing`, e.g. the prompt-tuning offset), and the extra keys older official files carry (BERT
  `position_ids`, pooler weights). Anything else missing, unexpected or mis-shaped raises `WeightLoadError`
  naming the keys.
* anything else (e.g. `swin_tiny_patch4_window7_224.pth`, as the pre-training configs name it): each model key
  takes the longest file key that is a suffix of it (the reference's rule); unmatched model keys keep their
  initialisation and are logged.
"""
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, Mapping, Tuple, Union

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SHAPE_CHANGE_ALLOWED = ("cls_logits",)
RESIZABLE_TABLES = ("relative_position_bias_table",)
LEGACY_EXTRA_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids", "language_backbone.body.model.pooler.")
DEFAULT_ALLOWED_MISSING = ("rpn.tunable_linear.",)


class WeightLoadError(RuntimeError):
    """The weight file does not fit the model built from the config."""


def read_checkpoint(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (`model` / `state_dict` entry, or the dict itself).

    `path` may also be an `hf://OWNER/REPO/FILE` reference or an `https://` URL (`glip.utils.hub`).
    """
    from glip.utils.hub import resolve

    path = Path(resolve(path))
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled objects beyond tensors: only for files the user trusts
        logger.warning("%s is not a plain tensor checkpoint (%s); loading it with full unpickling", path, err)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return extract_state_dict(ckpt, source=str(path))


def extract_state_dict(ckpt, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(ckpt, Mapping) and key in ckpt and isinstance(ckpt[key], Mapping):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, Mapping) or not all(torch.is_tensor(v) for v in ckpt.values()):
        raise WeightLoadError(f"{source}: no state dict of tensors found (expected a dict with 'model')")
    return strip_prefix(OrderedDict(ckpt), "module.")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> "OrderedDict[str, torch.Tensor]":
    """Remove `prefix` from every key, if (and only if) all keys carry it."""
    if not state or not all(k.startswith(prefix) for k in state):
        return OrderedDict(state)
    return OrderedDict((k[len(prefix):], v) for k, v in state.items())


def resize_position_table(table: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """Bilinearly resize a Swin relative-position bias table ((2w-1)^2, heads) to another window size."""
    old, new = int(math.sqrt(table.shape[0])), int(math.sqrt(shape[0]))
    grid = table.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bilinear")
    return grid.permute(0, 2, 3, 1).reshape(new * new, -1)


def _is_full_checkpoint(model_keys: Iterable[str], file_keys: Iterable[str]) -> bool:
    model_keys, file_keys = set(model_keys), set(file_keys)
    return len(model_keys & file_keys) >= 0.5 * len(model_keys)


def load_weights(model: torch.nn.Module, source, allowed_missing: Tuple[str, ...] = DEFAULT_ALLOWED_MISSING,
                 strict: bool = True) -> dict:
    """Load `source` (a path or a state dict) into `model`; returns a report of what was done.

    With `strict=False` the problems that would raise are logged instead.
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    loaded = read_checkpoint(source) if not isinstance(source, Mapping) else extract_state_dict(source, name)
    own = model.state_dict()
    if _is_full_checkpoint(own, loaded):
        new_state, report = _match_exact(own, loaded, allowed_missing)
        problems = {k: v for k, v in report.items() if k in ("missing", "unexpected", "mismatched") and v}
        if problems:
            msg = "; ".join(f"{kind}: {', '.join(sorted(keys)[:20])}" + (" ..." if len(keys) > 20 else "")
                            for kind, keys in problems.items())
            if strict:
                raise WeightLoadError(f"{name} does not fit the model built from the config ({msg})")
            logger.warning("%s: %s", name, msg)
    else:
        new_state, report = _match_suffix(own, loaded)
    model.load_state_dict(new_state, strict=True)
    for kind in ("shape_changed", "resized", "legacy_extra", "allowed_missing", "unmatched"):
        if report.get(kind):
            logger.info("%s: %s %d keys: %s", name, kind.replace("_", " "), len(report[kind]),
                        ", ".join(sorted(report[kind])[:10]) + (" ..." if len(report[kind]) > 10 else ""))
    logger.info("loaded %d tensors from %s", len(report["loaded"]), name)
    return report


def _match_exact(own, loaded, allowed_missing):
    report = {k: [] for k in ("loaded", "missing", "unexpected", "mismatched", "shape_changed", "resized",
                              "legacy_extra", "allowed_missing")}
    new_state = OrderedDict(own)
    for key, target in own.items():
        if key not in loaded:
            report["allowed_missing" if key.startswith(allowed_missing) else "missing"].append(key)
            continue
        value = loaded[key]
        if value.shape != target.shape:
            if any(t in key for t in RESIZABLE_TABLES):
                new_state[key] = resize_position_table(value, tuple(target.shape)).to(target.dtype)
                report["resized"].append(key)
            elif any(t in key for t in SHAPE_CHANGE_ALLOWED):
                report["shape_changed"].append(key)
            else:
                report["mismatched"].append(f"{key} (file {tuple(value.shape)}, model {tuple(target.shape)})")
            continue
        new_state[key] = value.to(target.dtype)
        report["loaded"].append(key)
    for key in loaded:
        if key not in own:
            report["legacy_extra" if any(t in key for t in LEGACY_EXTRA_KEYS) else "unexpected"].append(key)
    return new_state, report


def _match_suffix(own, loaded):
    """The reference's rule: each model key takes the longest file key that is a suffix of it."""
    report = {"loaded": [], "unmatched": [], "shape_changed": [], "resized": []}
    new_state = OrderedDict(own)
    file_keys = sorted(loaded)
    for key in sorted(own):
        candidates = [k for k in file_keys if key.endswith(k)]
        if not candidates:
            report["unmatched"].append(key)
            continue
        src = max(candidates, key=len)
        value, target = loaded[src], own[key]
        if value.shape != target.shape:
            if any(t in src for t in RESIZABLE_TABLES):
                new_state[key] = resize_position_table(value, tuple(target.shape)).to(target.dtype)
                report["resized"].append(key)
            else:
                report["shape_changed"].append(key)
            continue
        new_state[key] = value.to(target.dtype)
        report["loaded"].append(key)
    return new_state, report
