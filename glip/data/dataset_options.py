"""Config options of the dataset constructors: which config key feeds which keyword argument.

Each dataset receives only the options its constructor declares (the reference passes one bag of
``extra_args`` to every dataset, whose ``**kwargs`` swallow what they do not use). An option is *set* when its
value differs from the default config's. What happens to a set option a dataset does not declare depends on the
option's ``scope``:

* ``DATASET`` (most): an error naming the option and the dataset, before anything is built (e.g.
  ``DATASETS.MAX_BOX`` for ``CocoGrounding``, which cannot honour it);
* ``CAPTIONS``: options that shape the captions of grounding data (negative sampling, class order, masks).
  The official pre-training configs set them once for a mixture of detection and gold-caption sources (GLIP-T:
  Objects365 TSV + GoldG + Flickr30k; GLIP-L: GoldG alone), and the fine-tuning flows reuse those configs with
  other datasets, so they apply to the datasets that take them and the others ignore them (logged; a warning
  when no dataset of the loader takes one);
  The caption options (``DATASETS.CAPTION_*``, packing, ``FURTHER_SCREEN``, ...) have this scope too: GLIP-L's
  config sets them for a run whose only training set is GoldG.
* ``SHARED``: also read outside the datasets (e.g. ``DATASETS.SHUFFLE_SEED`` seeds the sampler,
  ``DATASETS.SEPARATION_TOKENS`` joins the evaluation prompt); never refused here.
"""
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence

from glip.config import cfg as DEFAULT_CFG
from glip.data.datasets.coco import parse_override_category
from glip.data.datasets.registry import DATASET_FACTORIES

logger = logging.getLogger(__name__)


DATASET, CAPTIONS, SHARED = "dataset", "captions", "shared"


@dataclass(frozen=True)
class DatasetOption:
    """Constructor keyword ``arg`` fed by config ``key``; ``value(cfg)`` is None when the option is not passed;
    ``scope``: see the module docstring."""

    arg: str
    key: str
    value: Callable[[Any], Any]
    train_only: bool = True
    scope: str = DATASET


def _node(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _always(key: str):
    return lambda cfg: _node(cfg, key)


def _if_true(key: str, value=True):
    return lambda cfg: value if _node(cfg, key) else None


def _if_positive(key: str):
    return lambda cfg: _node(cfg, key) if _node(cfg, key) > 0 else None


def _override_category(cfg):
    d = cfg.DATASETS
    return parse_override_category(d.OVERRIDE_CATEGORY) if d.OVERRIDE_CATEGORY and d.USE_OVERRIDE_CATEGORY else None


def _caption_prompt(cfg):
    value = cfg.DATASETS.CAPTION_PROMPT
    return json.loads(value) if isinstance(value, str) else value


def _control_probabilities(cfg):
    probs = cfg.DATASETS.CONTROL_PROB
    return tuple(probs) if len(probs) == 4 else None


_FUSE = "MODEL.DYHEAD.FUSE_CONFIG."


def _caption(arg: str, key: str, value) -> DatasetOption:
    return DatasetOption(arg, "DATASETS." + key, value("DATASETS." + key), scope=CAPTIONS)


# Caption data (CaptionTSV / PseudoData), as the reference's builder passes them: several keys are passed only
# when > 0 (or True), so 0 means "the dataset's default" (e.g. CAPTION_CONF 0 -> 0.5, RANDOM_PACK_PROB 0 -> -1).
CAPTION_OPTIONS = (
    _caption("caption_min_box", "CAPTION_MIN_BOX", _if_positive),
    _caption("replace_clean_label", "REPLACE_CLEAN_LABEL", _if_true),
    _caption("further_screen", "FURTHER_SCREEN", _if_true),
    _caption("caption_conf", "CAPTION_CONF", _if_positive),
    _caption("caption_nms", "CAPTION_NMS", _always),
    _caption("pack_random_caption_number", "PACK_RANDOM_CAPTION_NUMBER", _if_positive),
    _caption("inference_caption", "INFERENCE_CAPTION", _if_true),
    _caption("sample_negative_for_grounding_data", "SAMPLE_NEGATIVE_FOR_GROUNDING_DATA", _if_positive),
    _caption("random_pack_prob", "RANDOM_PACK_PROB", _if_positive),
    _caption("no_random_pack_probability", "NO_RANDOM_PACK_PROBABILITY", _if_positive),
    _caption("safeguard_positive_caption", "SAFEGUARD_POSITIVE_CAPTION", _always),
    DatasetOption("mlm_obj_for_only_positive", _FUSE + "MLM_OBJ_FOR_ONLY_POSITIVE",
                  _always(_FUSE + "MLM_OBJ_FOR_ONLY_POSITIVE"), scope=CAPTIONS),
    _caption("caption_format_version", "CAPTION_FORMAT_VERSION", _always),
    DatasetOption("diver_box_for_vqa", "DATASETS.DIVER_BOX_FOR_VQA", _if_true("DATASETS.DIVER_BOX_FOR_VQA")),
)

# The reference's extra_args, in its order; when a value function returns None the option is not passed.
DATASET_OPTIONS = (
    DatasetOption("ignore_crowd", "DATASETS.USE_CROWD", _if_true("DATASETS.USE_CROWD", False)),
    DatasetOption("max_box", "DATASETS.MAX_BOX", _if_positive("DATASETS.MAX_BOX")),
    DatasetOption("few_shot", "DATASETS.FEW_SHOT", _if_positive("DATASETS.FEW_SHOT")),
    DatasetOption("shuffle_seed", "DATASETS.SHUFFLE_SEED", lambda cfg: cfg.DATASETS.SHUFFLE_SEED or None,
                  scope=SHARED),
    DatasetOption("random_sample_negative", "DATASETS.RANDOM_SAMPLE_NEG", _if_positive("DATASETS.RANDOM_SAMPLE_NEG"),
                  scope=CAPTIONS),
    DatasetOption("add_detection_prompt", "DATASETS.ADD_DET_PROMPT", _if_true("DATASETS.ADD_DET_PROMPT"),
                  scope=CAPTIONS),
    DatasetOption("disable_shuffle", "DATASETS.DISABLE_SHUFFLE", _if_true("DATASETS.DISABLE_SHUFFLE"),
                  scope=CAPTIONS),
    DatasetOption("control_probabilities", "DATASETS.CONTROL_PROB", _control_probabilities, scope=CAPTIONS),
    DatasetOption("disable_clip_to_image", "DATASETS.DISABLE_CLIP_TO_IMAGE",
                  _if_true("DATASETS.DISABLE_CLIP_TO_IMAGE")),
    DatasetOption("no_minus_one_for_one_hot", "DATASETS.NO_MINUS_ONE_FOR_ONE_HOT",
                  _if_true("DATASETS.NO_MINUS_ONE_FOR_ONE_HOT")),
    DatasetOption("separation_tokens", "DATASETS.SEPARATION_TOKENS", _always("DATASETS.SEPARATION_TOKENS"),
                  scope=SHARED),
    DatasetOption("no_mask_for_od", _FUSE + "NO_MASK_FOR_OD", _always(_FUSE + "NO_MASK_FOR_OD"), scope=CAPTIONS),
    DatasetOption("no_mask_for_gold", _FUSE + "NO_MASK_FOR_GOLD", _always(_FUSE + "NO_MASK_FOR_GOLD"),
                  scope=CAPTIONS),
    *CAPTION_OPTIONS,
    DatasetOption("special_safeguard_for_coco_grounding", "DATASETS.SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING",
                  _always("DATASETS.SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING")),
    DatasetOption("class_agnostic", "DATASETS.CLASS_AGNOSTIC", _always("DATASETS.CLASS_AGNOSTIC")),
    DatasetOption("sample_ratio", "DATASETS.SAMPLE_RATIO", _always("DATASETS.SAMPLE_RATIO")),
    DatasetOption("one_hot", "DATASETS.ONE_HOT", _if_true("DATASETS.ONE_HOT"), train_only=False, scope=SHARED),
    DatasetOption("override_category", "DATASETS.OVERRIDE_CATEGORY (with USE_OVERRIDE_CATEGORY)", _override_category,
                  train_only=False),
    DatasetOption("caption_prompt", "DATASETS.CAPTION_PROMPT", _caption_prompt, train_only=False, scope=SHARED),
    DatasetOption("use_caption_prompt", "DATASETS.USE_CAPTION_PROMPT", _always("DATASETS.USE_CAPTION_PROMPT"),
                  train_only=False, scope=SHARED),
)


def phase_options(is_train: bool) -> List[DatasetOption]:
    """The options of a training (all) or test loader (those not ``train_only``)."""
    return [opt for opt in DATASET_OPTIONS if is_train or not opt.train_only]


def option_values(cfg, is_train: bool) -> Dict[str, Any]:
    """``{constructor keyword: value}`` of the options the config passes to the datasets that declare them."""
    values = {opt.arg: opt.value(cfg) for opt in phase_options(is_train)}
    return {arg: value for arg, value in values.items() if value is not None}


def set_options(cfg, is_train: bool, defaults=None) -> List[DatasetOption]:
    """The options whose value differs from the default config's (``defaults``, default ``glip.config.cfg``)."""
    defaults = DEFAULT_CFG if defaults is None else defaults
    return [opt for opt in phase_options(is_train) if opt.value(cfg) != opt.value(defaults)]


def check_options(cfg, is_train: bool, datasets: Sequence[str], factories: Sequence, defaults=None) -> None:
    """Apply the scope rules of the module docstring to the set options; ``factories``: the
    ``DatasetFactory`` of each of ``datasets``. Raises ValueError for a ``DATASET`` option a dataset lacks."""
    for opt in set_options(cfg, is_train, defaults):
        if opt.scope == SHARED:
            continue
        ignoring = ["{} ({})".format(d, f.name) for d, f in zip(datasets, factories) if opt.arg not in f.parameters]
        if not ignoring:
            continue
        if opt.scope == DATASET:
            raise ValueError("{} is set to {!r}, but {} cannot honour it (no {!r} argument). Leave it at its default "
                             "or use datasets that take it: {}".format(
                                 opt.key, opt.value(cfg), ", ".join(ignoring), opt.arg,
                                 ", ".join(factory_names_taking(opt.arg))))
        log = logger.warning if len(ignoring) == len(datasets) else logger.info
        log("%s is set; it does not apply to %s", opt.key, ", ".join(ignoring))


def factory_names_taking(arg: str) -> List[str]:
    """Names of the registered dataset factories whose constructor takes ``arg``."""
    return sorted(name for name, factory in DATASET_FACTORIES.items() if arg in factory.parameters)
