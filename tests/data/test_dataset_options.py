"""Dataset options from the config: values passed, scope rules, and every official config passing the check."""
import functools
import logging
from pathlib import Path

import pytest
from helpers import FIXTURES

from glip.config import cfg as default_cfg
from glip.config.paths_catalog import DatasetCatalog, register_datasets
from glip.data.dataset_options import CAPTION_OPTIONS, check_options, option_values, set_options
from glip.data.datasets.registry import get_factory

OFFICIAL = FIXTURES / "official_configs"
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The options the reference's ODinW fine-tuning / evaluation command lines add, plus a few-shot run.
FINETUNE_OPTS = ["DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding", "DATASETS.USE_OVERRIDE_CATEGORY", True,
                 "DATASETS.USE_CAPTION_PROMPT", True, "DATASETS.DISABLE_SHUFFLE", True, "DATASETS.FEW_SHOT", 3,
                 "DATASETS.SHUFFLE_SEED", 30]


@functools.lru_cache(maxsize=None)
def _load(path):
    with open(path) as f:
        return default_cfg.load_cfg(f)


def _cfg(*files, opts=(), base=default_cfg):
    c = base.clone()
    for f in files:
        c.merge_from_other_cfg(_load(f).clone())
    c.merge_from_list(list(opts))
    return c


def _factories(*names):
    return [get_factory(n) for n in names]


# What the default config passes to caption datasets: the reference's unconditional caption keys, and
# CAPTION_MIN_BOX / CAPTION_CONF, which the default config sets above 0.
DEFAULT_CAPTION_VALUES = {"caption_min_box": 1, "caption_conf": 0.9, "caption_nms": 0.9,
                          "safeguard_positive_caption": True, "mlm_obj_for_only_positive": False,
                          "caption_format_version": "v1"}


def test_the_default_config_passes_only_the_unconditional_options():
    assert set_options(default_cfg, True) == [] and set_options(default_cfg, False) == []
    assert option_values(default_cfg, True) == dict({
        "separation_tokens": " ", "no_mask_for_od": False, "no_mask_for_gold": False,
        "special_safeguard_for_coco_grounding": False, "class_agnostic": False, "sample_ratio": 0.0,
        "use_caption_prompt": False}, **DEFAULT_CAPTION_VALUES)
    assert option_values(default_cfg, False) == {"use_caption_prompt": False}


def test_option_values_of_a_config_setting_every_option():
    c = _cfg(opts=[
        "DATASETS.USE_CROWD", True, "DATASETS.MAX_BOX", 7, "DATASETS.FEW_SHOT", 2, "DATASETS.SHUFFLE_SEED", 5,
        "DATASETS.RANDOM_SAMPLE_NEG", 10, "DATASETS.ADD_DET_PROMPT", True, "DATASETS.DISABLE_SHUFFLE", True,
        "DATASETS.CONTROL_PROB", (0.1, 0.2, 0.3, 0.4), "DATASETS.DISABLE_CLIP_TO_IMAGE", True,
        "DATASETS.NO_MINUS_ONE_FOR_ONE_HOT", True, "DATASETS.SEPARATION_TOKENS", ". ",
        "MODEL.DYHEAD.FUSE_CONFIG.NO_MASK_FOR_OD", True, "MODEL.DYHEAD.FUSE_CONFIG.NO_MASK_FOR_GOLD", True,
        "DATASETS.SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING", True, "DATASETS.CLASS_AGNOSTIC", True,
        "DATASETS.SAMPLE_RATIO", 0.5, "DATASETS.ONE_HOT", True,
        "DATASETS.OVERRIDE_CATEGORY", '[{"id": 1, "name": "tree"}]', "DATASETS.USE_OVERRIDE_CATEGORY", True,
        "DATASETS.CAPTION_PROMPT", '[{"prefix": "a ", "name": "tree", "suffix": ""}]',
        "DATASETS.USE_CAPTION_PROMPT", True])
    test_values = {"one_hot": True, "override_category": [{"id": 1, "name": "tree"}],
                   "caption_prompt": [{"prefix": "a ", "name": "tree", "suffix": ""}], "use_caption_prompt": True}
    assert option_values(c, False) == test_values
    assert option_values(c, True) == dict(
        test_values, ignore_crowd=False, max_box=7, few_shot=2, shuffle_seed=5, random_sample_negative=10,
        add_detection_prompt=True, disable_shuffle=True, control_probabilities=(0.1, 0.2, 0.3, 0.4),
        disable_clip_to_image=True, no_minus_one_for_one_hot=True, separation_tokens=". ", no_mask_for_od=True,
        no_mask_for_gold=True, special_safeguard_for_coco_grounding=True, class_agnostic=True, sample_ratio=0.5,
        **DEFAULT_CAPTION_VALUES)
    assert len(set_options(c, True)) == 20 and len(set_options(c, False)) == 4


def test_conditional_options_keep_the_reference_conditions():
    # Values the reference does not pass (MAX_BOX <= 0, a CONTROL_PROB without 4 entries, override names without
    # USE_OVERRIDE_CATEGORY) are not passed, and do not count as set.
    c = _cfg(opts=["DATASETS.MAX_BOX", -5, "DATASETS.CONTROL_PROB", (0.5, 0.5),
                   "DATASETS.OVERRIDE_CATEGORY", '[{"id": 1, "name": "tree"}]'])
    values = option_values(c, True)
    assert "max_box" not in values and "control_probabilities" not in values and "override_category" not in values
    assert set_options(c, True) == []


def test_a_dataset_option_a_dataset_cannot_honour_is_refused_by_name():
    c = _cfg(opts=["DATASETS.MAX_BOX", 5])
    check_options(c, True, ["coco_2017_train"], _factories("COCODataset"))
    with pytest.raises(ValueError, match=r"DATASETS.MAX_BOX is set to 5, but train_grounding \(CocoGrounding\) "
                                         r"cannot honour it.*take it: COCODataset"):
        check_options(c, True, ["train_grounding"], _factories("CocoGrounding"))
    # Also inside a mixture: every member must take a dataset option.
    with pytest.raises(ValueError, match=r"flickr30k_train \(FlickrDataset\)"):
        check_options(c, True, ["coco_2017_train", "flickr30k_train"], _factories("COCODataset", "FlickrDataset"))
    # Train-only options are not considered for test loaders.
    check_options(c, False, ["val"], _factories("LvisDetection"))
    override = _cfg(opts=["DATASETS.OVERRIDE_CATEGORY", '[{"id": 1, "name": "tree"}]',
                          "DATASETS.USE_OVERRIDE_CATEGORY", True])
    with pytest.raises(ValueError, match=r"DATASETS.OVERRIDE_CATEGORY.*flickr30k_val \(FlickrDataset\)"):
        check_options(override, False, ["flickr30k_val"], _factories("FlickrDataset"))


def test_caption_options_apply_to_the_datasets_that_take_them(caplog):
    c = _cfg(opts=["DATASETS.RANDOM_SAMPLE_NEG", 85])
    names = ["object365_dt_train", "mixed_train_no_coco"]
    with caplog.at_level(logging.INFO, logger="glip.data.dataset_options"):
        check_options(c, True, names, _factories("CocoDetectionTSV", "MixedDataset"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "DATASETS.RANDOM_SAMPLE_NEG is set; it does not apply to mixed_train_no_coco (MixedDataset)")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glip.data.dataset_options"):
        check_options(c, True, names[1:], _factories("MixedDataset"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_shared_options_are_not_refused(caplog):
    c = _cfg(opts=["DATASETS.SHUFFLE_SEED", 3, "DATASETS.SEPARATION_TOKENS", ". ", "DATASETS.ONE_HOT", True,
                   "DATASETS.USE_CAPTION_PROMPT", True])
    with caplog.at_level(logging.INFO, logger="glip.data.dataset_options"):
        check_options(c, True, ["flickr30k_train"], _factories("FlickrDataset"))
        check_options(c, False, ["val"], _factories("COCODataset"))
    assert caplog.records == []


def _check_loaders(c, where):
    for is_train in (True, False):
        suffix = c.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else c.DATASETS.TEST_DATASETNAME_SUFFIX
        register_datasets(c, is_train)
        names = [n + suffix for n in (c.DATASETS.TRAIN if is_train else c.DATASETS.TEST)]
        factories = [get_factory(DatasetCatalog.get(n)["factory"], n) for n in names]
        try:
            check_options(c, is_train, names, factories)
        except ValueError as exc:
            raise AssertionError("{} ({}): {}".format(where, "train" if is_train else "test", exc))


def test_official_configs_pass_the_option_check(monkeypatch):
    """Each official config alone, each task config over the pre-training config (test_grounding_net
    --task_config), and each ODinW task over it with the fine-tuning options."""
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    own = [p for p in sorted(REPO_CONFIGS.rglob("*.yaml")) if not (OFFICIAL / p.relative_to(REPO_CONFIGS)).exists()]
    assert own  # configs/ mirrors the official files (tests/config/test_official_configs.py) plus our own
    configs = sorted(OFFICIAL.rglob("*.yaml")) + own
    for path in configs:
        _check_loaders(_cfg(path), path.name)
    pretrain = sorted((OFFICIAL / "pretrain").glob("glip*.yaml"))
    tasks = [p for p in OFFICIAL.rglob("*.yaml") if p not in pretrain]
    assert len(pretrain) == 4 and len(tasks) == 54
    # The four pre-training configs set the same dataset options, so one of them stands for all as the base
    # (GLIP-L also sets the caption options, which only caption data takes: none of the task configs has any).
    caption_keys = {o.key for o in CAPTION_OPTIONS}
    set_values = {p.name: [(o.key, o.value(_cfg(p))) for o in set_options(_cfg(p), True) if o.key not in caption_keys]
                  for p in pretrain}
    assert len({repr(v) for v in set_values.values()}) == 1, set_values
    base = _cfg(OFFICIAL / "pretrain/glip_Swin_T_O365_GoldG.yaml")
    for task in tasks:
        _check_loaders(_cfg(task, base=base), "GLIP-T + {}".format(task.name))
        if task.parent.name.startswith("odinw"):
            _check_loaders(_cfg(task, opts=FINETUNE_OPTS, base=base), "GLIP-T + {} fine-tuning".format(task.name))
