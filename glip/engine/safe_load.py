"""Reading ``.pth`` files without running code from them.

``torch.load`` unpickles: a crafted file can name any Python callable and have it called. Every checkpoint is
therefore read with ``weights_only=True``, which accepts tensors and plain data only (dicts, lists, tuples,
numbers, strings, ``None``, ``OrderedDict``, torch sizes / dtypes) plus :data:`SAFE_GLOBALS`: numpy scalars,
dtypes and arrays of numbers, which some checkpoints hold. That covers the official GLIP files (``model``,
``optimizer``, ``scheduler``, ``iteration``), Swin ImageNet files and everything ``glip.engine.checkpointer``
writes. A file holding anything else is refused with :class:`UntrustedCheckpointError`, naming the file, the
object it wanted and the opt-in: ``GLIP_TRUST_CHECKPOINTS=1`` in the environment unpickles fully, for files the
user trusts. There is no silent fallback.
"""
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Union

import numpy as np
import torch

from glip.utils.errors import UntrustedCheckpointError, WeightFileError, WeightFileNotFoundError
from glip.utils.hub import resolve

logger = logging.getLogger(__name__)

TRUST_ENV = "GLIP_TRUST_CHECKPOINTS"


def _numpy_globals() -> list:
    """numpy's scalar / array reconstructors and dtype classes, also under the numpy 1.x names older files use."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = [np.dtype, np.ndarray, multiarray.scalar, multiarray._reconstruct,
               (multiarray.scalar, "numpy.core.multiarray.scalar"),
               (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


SAFE_GLOBALS = _numpy_globals()


def trust_requested() -> bool:
    """True when ``GLIP_TRUST_CHECKPOINTS`` is set to something other than "" / "0"."""
    return os.environ.get(TRUST_ENV, "") not in ("", "0")


def load_checkpoint(path: Union[str, Path], mmap: bool = False, trust: bool = None):
    """The object stored in the checkpoint file ``path``, on the CPU.

    ``path`` may be ``hf://OWNER/REPO/FILE`` or a URL (:func:`glip.utils.hub.resolve`: read from the hub cache).
    ``mmap``: map the tensors' storage instead of reading it (zip-format files; cheap for looking at shapes).
    ``trust``: unpickle fully (default: :func:`trust_requested`). Raises :class:`WeightFileNotFoundError`,
    :class:`UntrustedCheckpointError` (an object that is not plain data) or :class:`WeightFileError` (not a
    readable checkpoint), each naming ``path``.
    """
    path = Path(resolve(path))  # hf://OWNER/REPO/FILE and URLs: the local copy in the hub cache
    if not path.exists():
        raise WeightFileNotFoundError("weight file not found: {}; check the path".format(path))
    if not path.is_file():
        raise WeightFileError("weight file {} is not a file; give the .pth file".format(path))
    trust = trust_requested() if trust is None else trust
    mmap = mmap and zipfile.is_zipfile(path)
    if trust:
        logger.info("%s=1: unpickling %s fully", TRUST_ENV, path)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise UntrustedCheckpointError(
                "refused to load {}: it holds the Python object {}, and unpickling it could run code; if you trust "
                "the file, set {}=1".format(path, refused.group(1), TRUST_ENV)) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        if detail:
            raise WeightFileError(
                "weight file {} is not plain checkpoint data ({}): it is corrupt, or holds pickled objects; if you "
                "trust the file, set {}=1".format(path, detail.group(1).strip(), TRUST_ENV)) from None
        raise _unreadable(path, err) from err
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError, ... for files that are not checkpoints
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> WeightFileError:
    detail = str(err).split("\n")[0].split(". ")[0][:160] or "no detail"
    return WeightFileError("weight file {} is not a readable PyTorch checkpoint ({}: {}); it may be truncated or "
                           "not a .pth file: download or save it again".format(path, type(err).__name__, detail))
