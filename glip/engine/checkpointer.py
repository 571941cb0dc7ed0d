"""Training checkpoints in the reference's layout, written atomically, with everything needed to resume.

Layout (as maskrcnn_benchmark): ``save_dir/<name>.pth`` (``model_0002500.pth``, ``model_final.pth``,
``model_best.pth``) and ``save_dir/last_checkpoint``, a text file holding the file name of the newest one. A
checkpoint is a dict: ``model`` (state dict, no ``module.`` prefix), ``optimizer``, ``scheduler`` (a list for
multi-stage schedules), ``model_ema``, ``scaler`` (GradScaler), ``rng`` (one entry per process: torch, CUDA,
numpy and python random states) and the caller's extra data (``iteration``, ...). Everything is tensors and plain
data (numpy values in the extra data are converted), so a checkpoint loads with ``weights_only``.

Every file is first written to a temporary file in the same directory, flushed to disk, then renamed over the
target (``os.replace``), so a crash never leaves a half-written checkpoint or ``last_checkpoint``.
"""
import logging
import os
import random
import tempfile
from collections import OrderedDict
from typing import List, Optional

import numpy as np
import torch

from glip.engine.ema import unwrap_model
from glip.utils.comm import all_gather, get_rank, get_world_size, is_main_process

LAST_CHECKPOINT = "last_checkpoint"


def capture_rng_state() -> dict:
    """This process's random states, made of tensors and plain numbers (loadable with ``weights_only``)."""
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict):
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str):
    """``torch.save`` to a temporary file next to ``path``, fsync, then rename it over ``path``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str):
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path: str, write):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file what a plain open() would
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _strip_module_prefix(state):
    if state and all(k.startswith("module.") for k in state):
        return OrderedDict((k[len("module."):], v) for k, v in state.items())
    return state


class Checkpointer:
    """Saves and restores the training state of ``model`` (plain or DDP-wrapped).

    ``save_to_disk`` defaults to "this is rank 0"; ``save`` must be called on every process (it gathers the
    random states of all ranks) but only the writer touches the disk. ``ema`` (a ModelEma) and ``scaler`` (a
    GradScaler) may be attached later by assigning the attributes.
    """

    def __init__(self, model, optimizer=None, scheduler=None, save_dir: str = "", save_to_disk: Optional[bool] = None,
                 ema=None, scaler=None, logger: Optional[logging.Logger] = None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = save_dir
        self.save_to_disk = is_main_process() if save_to_disk is None else save_to_disk
        self.ema = ema
        self.scaler = scaler
        self.logger = logger or logging.getLogger(__name__)

    def save(self, name: str, **kwargs):
        """Write ``save_dir/<name>.pth`` with the full training state plus ``kwargs``; tag it as the last one."""
        if not self.save_dir:
            return
        rng = all_gather(capture_rng_state()) if get_world_size() > 1 else [capture_rng_state()]
        if not self.save_to_disk:
            return
        data = {key: plain_data(value) for key, value in kwargs.items()}
        data["model"] = unwrap_model(self.model).state_dict()
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = ([s.state_dict() for s in self.scheduler] if isinstance(self.scheduler, list)
                                 else self.scheduler.state_dict())
        if self.ema is not None:
            data["model_ema"] = self.ema.state_dict()
        if self.scaler is not None:
            data["scaler"] = self.scaler.state_dict()
        data["rng"] = rng
        os.makedirs(self.save_dir, exist_ok=True)
        filename = "{}.pth".format(name)
        path = os.path.join(self.save_dir, filename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(filename)

    def load(self, f: Optional[str] = None, resume: bool = True, skip_optimizer: bool = False) -> dict:
        """Resume from ``last_checkpoint`` when there is one (and ``resume``), else load model weights from ``f``.

        Resuming restores model, optimizer, scheduler (unless ``skip_optimizer``), EMA, scaler and random states
        and returns the remaining entries (``iteration``, ...; ``model_ema`` / ``scaler`` too when no EMA /
        scaler is attached, so the caller can restore them). Loading ``f`` (an official GLIP checkpoint or a
        backbone file, see ``glip.engine.weights.load_weights``) restores the weights only and returns ``{}``.
        """
        if resume and self.has_checkpoint():
            path = os.path.join(self.save_dir, self.get_checkpoint_file())
            return self._resume(path, skip_optimizer)
        if not f:
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        from glip.engine.weights import load_weights

        self.logger.info("Loading weights from %s", f)
        load_weights(unwrap_model(self.model), f)
        return {}

    def _resume(self, path: str, skip_optimizer: bool) -> dict:
        self.logger.info("Resuming from %s", path)
        checkpoint = load_checkpoint_file(path)
        unwrap_model(self.model).load_state_dict(_strip_module_prefix(checkpoint.pop("model")))
        optimizer_state = checkpoint.pop("optimizer", None)
        scheduler_state = checkpoint.pop("scheduler", None)
        if not skip_optimizer:
            if optimizer_state is not None and self.optimizer is not None:
                self.optimizer.load_state_dict(optimizer_state)
            if scheduler_state is not None and self.scheduler is not None:
                if isinstance(self.scheduler, list):
                    for scheduler, state in zip(self.scheduler, scheduler_state):
                        scheduler.load_state_dict(state)
                else:
                    self.scheduler.load_state_dict(scheduler_state)
        if self.ema is not None and "model_ema" in checkpoint:
            self.ema.load_state_dict(checkpoint.pop("model_ema"))
        if self.scaler is not None and "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint.pop("scaler"))
        self._restore_rng(checkpoint.pop("rng", None))
        return checkpoint

    def _restore_rng(self, states: Optional[List[dict]]):
        if not states:
            return
        world_size, rank = get_world_size(), get_rank()
        if len(states) != world_size:
            self.logger.warning("checkpoint holds random states of %d processes, this run has %d: not restored",
                                len(states), world_size)
            return
        restore_rng_state(states[rank])

    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and os.path.exists(os.path.join(self.save_dir, LAST_CHECKPOINT))

    def get_checkpoint_file(self) -> str:
        """The file name (or path) recorded in ``last_checkpoint``; "" when it cannot be read."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT), "r") as f:
                return f.read().strip()
        except IOError:
            return ""

    def tag_last_checkpoint(self, last_filename: str):
        atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT), last_filename)


def load_checkpoint_file(path: str) -> dict:
    """A checkpoint dict from ``path``: tensors and plain data only (``glip.engine.safe_load``; a file holding other
    objects is refused unless ``GLIP_TRUST_CHECKPOINTS=1``)."""
    from glip.engine.safe_load import load_checkpoint

    return load_checkpoint(path)


def plain_data(value):
    """``value`` with numpy scalars as Python numbers and numpy arrays as tensors (in dicts, lists and tuples), so
    that the checkpoint loads with ``weights_only``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        value = value.copy()
        for key in value:
            value[key] = plain_data(value[key])
        return value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(plain_data(v) for v in value)
    return value
