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

Files are read with `glip.engine.safe_load` (tensors and plain data only). `check_fit` compares a file with the
shapes of a model (e.g. built on the `meta` device, see `glip.engine.preflight`) without loading anything, and
says in one line what does not fit and what the file looks like.
"""
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from glip.engine.safe_load import load_checkpoint
from glip.utils.errors import WeightFileError

logger = logging.getLogger(__name__)

SHAPE_CHANGE_ALLOWED = ("cls_logits",)
RESIZABLE_TABLES = ("relative_position_bias_table",)
LEGACY_EXTRA_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids", "language_backbone.body.model.pooler.")
DEFAULT_ALLOWED_MISSING = ("rpn.tunable_linear.",)
SWIN_WIDTHS = {96: "Swin-T", 128: "Swin-B", 192: "Swin-L"}  # patch-embedding channels -> name (96 + 18 blocks: S)

Shapes = Mapping[str, Tuple[int, ...]]


class WeightLoadError(WeightFileError, RuntimeError):
    """The weight file does not fit the model built from the config."""


def read_checkpoint(path: Union[str, Path], mmap: bool = False) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (`model` / `state_dict` entry, or the dict itself).

    Read safely (`glip.engine.safe_load.load_checkpoint`); `mmap` maps the tensors instead of reading them.
    """
    return extract_state_dict(load_checkpoint(path, mmap=mmap), source=str(path))


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


def shapes_of(state: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    """``{key: shape}`` of a state dict (works for `meta` and memory-mapped tensors)."""
    return {key: tuple(value.shape) for key, value in state.items()}


def fit_report(own: Shapes, loaded: Shapes, allowed_missing: Tuple[str, ...] = DEFAULT_ALLOWED_MISSING) -> dict:
    """How a full checkpoint's tensors (``loaded`` shapes) map onto a model's (``own`` shapes), key by key.

    Lists of keys: ``loaded``, ``missing``, ``unexpected``, ``mismatched`` (``"key (file S, model S)"``),
    ``shape_changed`` (allowed: `cls_logits`), ``resized`` (Swin tables), ``legacy_extra``, ``allowed_missing``.
    """
    report = {k: [] for k in ("loaded", "missing", "unexpected", "mismatched", "shape_changed", "resized",
                              "legacy_extra", "allowed_missing")}
    for key, target in own.items():
        if key not in loaded:
            report["allowed_missing" if key.startswith(allowed_missing) else "missing"].append(key)
        elif tuple(loaded[key]) == tuple(target):
            report["loaded"].append(key)
        elif any(t in key for t in RESIZABLE_TABLES):
            report["resized"].append(key)
        elif any(t in key for t in SHAPE_CHANGE_ALLOWED):
            report["shape_changed"].append(key)
        else:
            report["mismatched"].append(f"{key} (file {tuple(loaded[key])}, model {tuple(target)})")
    for key in loaded:
        if key not in own:
            report["legacy_extra" if any(t in key for t in LEGACY_EXTRA_KEYS) else "unexpected"].append(key)
    return report


def misfit_summary(report: dict, total: int) -> str:
    """One clause per kind of problem of a :func:`fit_report`: count and first key; "" when it fits."""
    parts = []
    for kind, what in (("mismatched", "differ in shape"), ("missing", "are missing from the file"),
                       ("unexpected", "are in the file but not in the model")):
        keys = report.get(kind) or []
        if keys:
            of = f" of {total}" if kind != "unexpected" else ""
            parts.append(f"{len(keys)}{of} tensors {what} (first: {keys[0]})")
    return "; ".join(parts)


def describe_checkpoint(shapes: Shapes) -> Optional[str]:
    """What a state dict looks like by its shapes, e.g. "a GLIP checkpoint with a Swin-L backbone"; None if unknown."""
    embed = next((shape for key, shape in shapes.items() if key.endswith("patch_embed.proj.weight")), None)
    if embed is None:
        return None
    width = embed[0]
    name = SWIN_WIDTHS.get(width, f"Swin ({width} channels)")
    blocks = {key.split("layers.2.blocks.")[1].split(".")[0] for key in shapes if "layers.2.blocks." in key}
    if width == 96 and len(blocks) > 6:
        name = "Swin-S"
    if any(key.startswith("language_backbone.") for key in shapes):
        return f"a GLIP checkpoint with a {name} backbone"
    return f"a {name} backbone checkpoint"


def check_fit(loaded: Shapes, own: Shapes, name: str, model_name: str = "the model built from the config",
              allowed_missing: Tuple[str, ...] = DEFAULT_ALLOWED_MISSING) -> dict:
    """Raise :class:`WeightLoadError` (one line) when the file ``name`` of shapes ``loaded`` cannot fill ``own``.

    A full checkpoint must fit key by key (:func:`fit_report`); a partial one (suffix matching) must share
    tensors with the model, most of them of the same shape. Returns the :func:`fit_report` of a full checkpoint,
    ``{}`` for a partial one.
    """
    if _is_full_checkpoint(own, loaded):
        report = fit_report(own, loaded, allowed_missing)
        summary = misfit_summary(report, len(own))
    else:
        report, summary = {}, _suffix_misfit(own, loaded)
    if summary:
        looks = describe_checkpoint(loaded)
        raise WeightLoadError(f"weight file {name} does not fit {model_name}: {summary}"
                              + (f"; it looks like {looks}" if looks else "")
                              + "; give the config the file was trained with, or the weight file of this config")
    return report


def _suffix_misfit(own: Shapes, loaded: Shapes) -> str:
    sources = suffix_sources(own, loaded)
    if not sources:
        return f"none of its {len(loaded)} tensors matches a model tensor by name"
    differ = [f"{key} (file {tuple(loaded[src])}, model {tuple(own[key])})" for key, src in sorted(sources.items())
              if tuple(loaded[src]) != tuple(own[key]) and not any(t in src for t in RESIZABLE_TABLES)]
    if len(differ) > len(sources) / 2:
        return (f"{len(differ)} of the {len(sources)} tensors it shares with the model differ in shape "
                f"(first: {differ[0]})")
    return ""


def suffix_sources(own: Iterable[str], loaded: Iterable[str]) -> Dict[str, str]:
    """The reference's rule: each model key takes the longest file key that is a suffix of it (unmatched: absent)."""
    file_keys = sorted(loaded)
    sources = {}
    for key in sorted(own):
        candidates = [k for k in file_keys if key.endswith(k)]
        if candidates:
            sources[key] = max(candidates, key=len)
    return sources


def load_weights(model: torch.nn.Module, source, allowed_missing: Tuple[str, ...] = DEFAULT_ALLOWED_MISSING,
                 strict: bool = True) -> dict:
    """Load `source` (a path or a state dict) into `model`; returns a report of what was done.

    With `strict=False` the problems that would raise are logged instead.
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    loaded = read_checkpoint(source) if not isinstance(source, Mapping) else extract_state_dict(source, name)
    own = model.state_dict()
    if _is_full_checkpoint(own, loaded):
        report = fit_report(shapes_of(own), shapes_of(loaded), allowed_missing)
        summary = misfit_summary(report, len(own))
        for kind in ("missing", "unexpected", "mismatched"):
            if report[kind]:
                logger.debug("%s: %s: %s", name, kind, ", ".join(report[kind]))
        if summary and strict:
            raise WeightLoadError(f"{name} does not fit the model built from the config: {summary}")
        if summary:
            logger.warning("%s: %s", name, summary)
        new_state = _exact_state(own, loaded, report)
    else:
        new_state, report = _match_suffix(own, loaded)
    model.load_state_dict(new_state, strict=True)
    for kind in ("shape_changed", "resized", "legacy_extra", "allowed_missing", "unmatched"):
        if report.get(kind):
            logger.info("%s: %s %d keys: %s", name, kind.replace("_", " "), len(report[kind]),
                        ", ".join(sorted(report[kind])[:10]) + (" ..." if len(report[kind]) > 10 else ""))
    logger.info("loaded %d tensors from %s", len(report["loaded"]), name)
    return report


def _exact_state(own, loaded, report) -> "OrderedDict[str, torch.Tensor]":
    new_state = OrderedDict(own)
    for key in report["loaded"]:
        new_state[key] = loaded[key].to(own[key].dtype)
    for key in report["resized"]:
        new_state[key] = resize_position_table(loaded[key], tuple(own[key].shape)).to(own[key].dtype)
    return new_state


def _match_suffix(own, loaded):
    """Suffix matching (:func:`suffix_sources`); tensors of another shape keep their initialisation."""
    report = {"loaded": [], "unmatched": [], "shape_changed": [], "resized": []}
    new_state = OrderedDict(own)
    sources = suffix_sources(own, loaded)
    for key in sorted(own):
        if key not in sources:
            report["unmatched"].append(key)
            continue
        src = sources[key]
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
