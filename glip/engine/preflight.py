"""Cheap checks of a run's inputs, made by the tools before any model is built or weight loaded.

Each check raises a ``glip.utils.errors.UserError`` whose one-line message names the culprit and what to do:

* :func:`check_weight`: the weight file exists (found as the loader finds it), reads safely
  (``glip.engine.safe_load``) and fits the model of the config. The fit is checked against the model's
  state-dict manifest (:func:`model_manifest`: the model built on the ``meta`` device, no memory, no weights),
  with the file memory-mapped, so a GLIP-L checkpoint given to a GLIP-T config costs a second, not a model build.
* :func:`check_start_weights`: for training, the checkpoint a run resumes from, or ``MODEL.WEIGHT`` and the
  pretrained BERT weights when that file does not hold the language backbone.
* :func:`check_datasets`: every dataset of ``DATASETS.TRAIN`` / ``DATASETS.TEST`` is known, its options are
  supported, its files and image folders exist, and its annotations pass ``glip.data.check.quick_check``
  (category ids, image files and headers, captions).
* :func:`check_caption`: a demo caption or class list that is empty or too long for the language model.
"""
import contextlib
import logging
import random
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from glip.engine.weights import DEFAULT_ALLOWED_MISSING, check_fit, read_checkpoint, shapes_of
from glip.utils.errors import ConfigError, DataError, WeightFileNotFoundError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _random_state_kept():
    """Run the body without moving torch's, numpy's or Python's random state."""
    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def model_manifest(cfg) -> Dict[str, Tuple[int, ...]]:
    """``{state-dict key: shape}`` of the model ``cfg`` describes, built on the ``meta`` device (no memory, no
    random numbers drawn)."""
    from glip.modeling.detector import build_detection_model

    with _random_state_kept(), torch.device("meta"):
        model = build_detection_model(cfg)
    return shapes_of(model.state_dict())


def resolve_weight(weight: str) -> str:
    """The path of ``weight`` as the loaders find it (as given, or under the data roots: ``./MODEL``, ...)."""
    from glip.config.paths_catalog import try_to_find

    try:
        return try_to_find(weight)
    except FileNotFoundError as err:
        raise WeightFileNotFoundError("weight file not found: {} ({}); give its path with --weight or "
                                      "MODEL.WEIGHT".format(weight, str(err).replace("Cannot find", "looked for"))
                                      ) from err


def check_weight(cfg, weight: Optional[str] = None, config_name: Optional[str] = None,
                 allowed_missing: Tuple[str, ...] = DEFAULT_ALLOWED_MISSING) -> Optional[str]:
    """Check ``weight`` (default ``MODEL.WEIGHT``) against the model of ``cfg``; returns its resolved path (None
    when there is no weight). ``config_name`` (e.g. the config file) names the model in the error."""
    return _check_weight(cfg, weight, config_name, allowed_missing)[0]


def _check_weight(cfg, weight, config_name, allowed_missing=DEFAULT_ALLOWED_MISSING):
    """(resolved path or None, True when the file is a full GLIP checkpoint)."""
    weight = weight if weight is not None else cfg.MODEL.WEIGHT
    if not weight:
        return None, False
    path = resolve_weight(weight)
    shapes = shapes_of(read_checkpoint(path, mmap=True))
    report = check_fit(shapes, model_manifest(cfg), path, _model_name(config_name), allowed_missing)
    return path, bool(report)


def _model_name(config_name: Optional[str]) -> str:
    return "the model of {}".format(config_name) if config_name else "the model of the config"


def check_start_weights(cfg, config_name: Optional[str] = None, pretrained_language: bool = True) -> Optional[str]:
    """The weights a training run starts from: the checkpoint ``OUTPUT_DIR/last_checkpoint`` names when there is
    one (the run resumes from it), else ``MODEL.WEIGHT`` (:func:`check_weight`) and, when that is not a full GLIP
    checkpoint and ``pretrained_language``, the pretrained BERT weights ``glip.engine.run`` then loads. Returns the
    path of the checkpoint checked."""
    import os

    from glip.engine.checkpointer import LAST_CHECKPOINT

    pointer = os.path.join(cfg.OUTPUT_DIR, LAST_CHECKPOINT) if cfg.OUTPUT_DIR else ""
    if not pointer or not os.path.exists(pointer):
        path, full = _check_weight(cfg, None, config_name)
        if pretrained_language and not full:
            check_language_weights(cfg)
        return path
    with open(pointer) as f:
        path = os.path.join(cfg.OUTPUT_DIR, f.read().strip())
    shapes = {key: shape for key, shape in shapes_of(read_checkpoint(path, mmap=True)).items()
              if not key.startswith(DEFAULT_ALLOWED_MISSING)}  # modules a run adds (prompt tuning) may be there
    check_fit(shapes, model_manifest(cfg), "{} (named by {}, to resume from)".format(path, pointer),
              _model_name(config_name))
    return path


def check_language_weights(cfg) -> str:
    """The folder of the pretrained ``MODEL.LANGUAGE_BACKBONE.MODEL_TYPE`` weights (local folder, HF cache,
    shipped copy, or the hub when online); raises ``WeightFileNotFoundError`` when there is none."""
    from glip.modeling.language.pretrained import WEIGHT_FILES, resolve_pretrained

    name = cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE
    try:
        return resolve_pretrained(name, WEIGHT_FILES, what="BERT weights")
    except FileNotFoundError as err:
        raise WeightFileNotFoundError("{}; MODEL.WEIGHT is not a full GLIP checkpoint, so the language backbone "
                                      "starts from them: download them once with the hub online, or give "
                                      "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE a local folder".format(err)) from err


def _dataset_names(cfg, is_train: bool) -> List[str]:
    names = list(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)
    if names and isinstance(names[0], (list, tuple)):
        names = [name for group in names for name in group]
    suffix = cfg.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else cfg.DATASETS.TEST_DATASETNAME_SUFFIX
    return [name + suffix for name in names]


def check_datasets(cfg, is_train: bool, tokenizer=None) -> List[str]:
    """Check every dataset the training (``is_train``) or test loaders of ``cfg`` would read; returns their names.

    Registers ``DATASETS.REGISTER`` in the catalog as the loaders do.
    """
    from glip.config.paths_catalog import DatasetCatalog, register_datasets
    from glip.data.check import dataset_inputs, quick_check
    from glip.data.dataset_options import check_options
    from glip.data.datasets import resolve_dataset
    from glip.data.datasets.registry import factory_of

    key = "DATASETS.TRAIN" if is_train else "DATASETS.TEST"
    register_datasets(cfg, is_train)
    names = _dataset_names(cfg, is_train)
    try:
        factories = [factory_of(name, DatasetCatalog) for name in names]
        check_options(cfg, is_train, names, factories)
    except (KeyError, ValueError, NotImplementedError) as err:
        raise ConfigError("{}: {}".format(key, str(err).strip("'\""))) from err
    count_tokens = None
    for name in names:
        try:
            factory, args = resolve_dataset(name, DatasetCatalog)
        except FileNotFoundError as err:
            raise DataError("dataset {!r} ({}): {}; put the files there or point $DATASET at the folder holding "
                            "them (DATA.md)".format(name, key, err)) from err
        inputs = dataset_inputs(factory.name, args)
        if inputs["grounding"] and count_tokens is None:
            count_tokens = _offsets_counter(cfg, tokenizer)
        report = quick_check(inputs, count_tokens, cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN)
        for warning in report.warnings:
            logger.warning("dataset %r: %s", name, warning)
        if report.errors:
            more = len(report.errors) - 1
            raise DataError("dataset {!r} ({}): {}{}".format(
                name, key, report.errors[0], "; {} more problem{} (python tools/check_dataset.py --name {} lists "
                "them)".format(more, "s" if more > 1 else "", name) if more else ""))
    return names


def _offsets_counter(cfg, tokenizer=None):
    if tokenizer is None:
        from glip.data.positive_map import load_tokenizer

        tokenizer = load_tokenizer(cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    return lambda text: tokenizer(text, return_offsets_mapping=True)["offset_mapping"]


def check_caption(caption: Union[str, Sequence[str]], tokenizer, max_query_len: int) -> None:
    """Refuse an empty caption, an empty class name, a free caption longer than ``max_query_len`` tokens, or a
    class name that alone is longer (class lists, and "a. b. c." captions, longer than that are split into prompts by
    the predictor)."""
    from glip.engine.phrases import is_separator_list, split_on_separator

    if isinstance(caption, str) and caption.strip() and is_separator_list(caption):
        caption = [phrase.text for phrase in split_on_separator(caption)]
    if isinstance(caption, str):
        if not caption.strip():
            raise DataError("the caption is empty; give a caption, or class names with --categories")
        count = len(tokenizer(caption)["input_ids"])
        if count > max_query_len:
            raise DataError("the caption {!r} has {} tokens, more than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN = {}; "
                            "shorten it, or give class names with --categories (split into several prompts)".format(
                                _shorten(caption), count, max_query_len))
        return
    names = list(caption)
    if not names or any(not str(name).strip() for name in names):
        raise DataError("empty class name in {!r}; give non-empty names separated by commas".format(names))
    for name in names:
        count = len(tokenizer(name)["input_ids"])
        if count > max_query_len:
            raise DataError("the class name {!r} alone has {} tokens, more than MODEL.LANGUAGE_BACKBONE."
                            "MAX_QUERY_LEN = {}; shorten it".format(_shorten(name), count, max_query_len))


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
