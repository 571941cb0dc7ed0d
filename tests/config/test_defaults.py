"""glip.config.cfg against the reference: full merged dump of GLIP-T and hand-checked defaults."""
import os

import pytest
import yaml
from helpers import FIXTURES, REFERENCE

from glip.config import CfgNode, cfg

GOLDEN_OPTS = [
    "TEST.IMS_PER_BATCH", "1",
    "MODEL.DYHEAD.SCORE_AGG", "MEAN",
    "TEST.EVAL_TASK", "detection",
    "MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS", "False",
    "MODEL.DEVICE", "cpu",
]


PROJECT_KEYS = ["SOLVER.SKIP_NONFINITE", "SOLVER.AMP_DTYPE", "MODEL.DYHEAD.FUSE_CONFIG.ATTN_EMBED_DIM",
                "AUGMENT.FLIP_SWAP_LEFT_RIGHT", "MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN"]


def _diff(ours, gold, prefix=""):
    """Every key path whose presence, value or exact type differs between two plain dicts."""
    problems = []
    for key in sorted(set(ours) | set(gold)):
        path = prefix + str(key)
        if key not in ours:
            problems.append("missing " + path)
        elif key not in gold:
            problems.append("unexpected " + path)
        elif isinstance(ours[key], dict) and isinstance(gold[key], dict):
            problems.extend(_diff(ours[key], gold[key], path + "."))
        elif ours[key] != gold[key] or type(ours[key]) is not type(gold[key]):
            problems.append("{}: ours {!r} vs reference {!r}".format(path, ours[key], gold[key]))
    return problems


def test_cfg_is_a_yacs_node_of_our_subclass():
    assert isinstance(cfg, CfgNode)
    assert isinstance(cfg.MODEL.DYHEAD.FUSE_CONFIG, CfgNode)


def test_glip_tiny_test_config_equals_reference_dump_key_for_key():
    merged = cfg.clone()
    merged.merge_from_file(str(FIXTURES / "official_configs/pretrain/glip_Swin_T_O365_GoldG.yaml"))
    merged.merge_from_list(GOLDEN_OPTS)
    ours = yaml.safe_load(merged.dump())
    gold = yaml.safe_load((REFERENCE / "config_glip_tiny_test.yaml").read_text())
    # The catalog path is the location of the package's own paths_catalog.py, not the reference's.
    ours_catalog, gold_catalog = ours.pop("PATHS_CATALOG"), gold.pop("PATHS_CATALOG")
    assert gold_catalog.endswith("config/paths_catalog.py")
    assert ours_catalog.endswith(os.path.join("glip", "config", "paths_catalog.py"))
    assert os.path.isfile(ours_catalog)
    # Keys this project adds (documented in glip/config/defaults.py); everything else equals the reference.
    for key in PROJECT_KEYS:
        *path, leaf = key.split(".")
        node = ours
        for part in path:
            node = node[part]
        node.pop(leaf)
    assert _diff(ours, gold) == []


def test_defaults_not_visible_in_the_dump_match_the_reference_values():
    # Values the GLIP-T yaml overrides, so the golden dump cannot check them.
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.MODEL.RPN_ARCHITECTURE == "RPN"
    assert cfg.MODEL.DEVICE == "cuda"
    assert cfg.MODEL.BACKBONE.CONV_BODY == "R-50-C4"
    assert cfg.MODEL.BACKBONE.OUT_CHANNELS == 1024
    assert cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 2
    assert cfg.MODEL.RPN.ANCHOR_SIZES == (32, 64, 128, 256, 512)
    assert cfg.MODEL.RPN.ANCHOR_STRIDE == (16,)
    assert cfg.MODEL.RPN.ASPECT_RATIOS == (0.5, 1.0, 2.0)
    assert cfg.MODEL.RPN.SCALES_PER_OCTAVE == 3
    assert cfg.MODEL.DYHEAD.CHANNELS == 128 and cfg.MODEL.DYHEAD.NUM_CONVS == 4
    assert cfg.MODEL.DYHEAD.FUSE_CONFIG.TYPE == "" and not cfg.MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON
    assert cfg.INPUT.PIXEL_MEAN == [102.9801, 115.9465, 122.7717]
    assert cfg.INPUT.PIXEL_STD == [1.0, 1.0, 1.0]
    assert cfg.DATASETS.SEPARATION_TOKENS == " "
    assert cfg.DATASETS.RANDOM_SAMPLE_NEG == -1
    assert cfg.DATALOADER.SIZE_DIVISIBILITY == 0
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    assert cfg.SOLVER.BASE_LR == 0.001
    assert cfg.SOLVER.WEIGHT_DECAY == 0.0005
    assert cfg.SOLVER.STEPS == (30000,)
    assert cfg.SOLVER.MAX_EPOCH == 0
    assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(1.0 / 3)
    assert cfg.SOLVER.WARMUP_ITERS == 500
    assert cfg.SOLVER.USE_AMP is False and cfg.SOLVER.MODEL_EMA == 0.0
    assert cfg.SOLVER.FIND_UNUSED_PARAMETERS is True
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED is False and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.0
    assert cfg.TEST.IMS_PER_BATCH == 16 and cfg.TEST.EVAL_TASK == ""
    assert cfg.DATASETS.TRAIN == () and cfg.DATASETS.TEST == ()


def test_free_form_nodes_accept_new_keys_and_others_do_not():
    for node in (cfg.DATASETS.REGISTER, cfg.MODEL.MULTITASK, cfg.MODEL.SPEC, cfg.MODEL.BACKBONE.LAYER_SEARCH):
        assert node.is_new_allowed()
        assert len(node) == 0
    assert not cfg.is_new_allowed()
    assert not cfg.MODEL.DYHEAD.is_new_allowed()


def test_sequence_defaults_keep_their_container_type():
    # yacs coerces list <-> tuple to the default's type, so these types are part of the schema.
    assert isinstance(cfg.DATASETS.TRAIN, tuple)
    assert isinstance(cfg.AUGMENT.MULT_MIN_SIZE_TRAIN, tuple)
    assert isinstance(cfg.INPUT.PIXEL_MEAN, list)
    assert isinstance(cfg.MODEL.FCOS.FPN_STRIDES, list)
    assert isinstance(cfg.DATASETS.BING_INDEX_LIST, list)
    assert len(cfg.TEST.RANGES) == len(cfg.TEST.SCALES) == 12


def test_global_cfg_is_not_mutated_by_merging_a_clone():
    before = cfg.dump()
    clone = cfg.clone()
    clone.merge_from_list(["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.5"])
    assert clone.MODEL.DEVICE == "cpu" and clone.SOLVER.BASE_LR == 0.5
    assert cfg.dump() == before
