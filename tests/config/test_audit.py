"""The option audit table (glip/config/option_table.py) and its check (glip/config/audit.py).

* The table covers every key of the defaults, and only those.
* Every official yaml and every reference README command line passes the audit: each key it sets has an entry and
  none of its values is refused.
* Setting a refused key (or an unsupported value of an implemented one) stops `check_config`, and the tools before
  any work, with an error naming the key and the value.
* The table agrees with the builders' own checks: every value a builder refuses for a single key is refused by the
  table too (`enforced_by`; combinations of several keys that the reference cannot run, e.g. the head's optional
  losses, are refused by the builders, naming the keys).
"""
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FIXTURES

from glip.config import CfgNode
from glip.config import cfg as DEFAULTS
from glip.config.audit import RefusedOptionError, check_config, counts, leaf_keys, option_for, refusals
from glip.config.option_table import IMPLEMENTED, NO_EFFECT, OPTIONS, REFUSED
from glip.modeling.head.head_options import check_head_options
from glip.utils import cli

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = FIXTURES / "official_configs"
OFFICIAL_FILES = sorted(OFFICIAL.rglob("*.yaml"))
GLIP_T = str(ROOT / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
README_COMMANDS = yaml.safe_load((FIXTURES / "reference_readme_commands.yaml").read_text())
DEFAULT_KEYS = [key for key, _ in leaf_keys(DEFAULTS)]
BERT_BASE_HIDDEN = 768
KEY_TOKEN = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")


def _fresh():
    c = DEFAULTS.clone()
    c.defrost()
    return c


def _set_keys(node, prefix=""):
    for key, value in node.items():
        full = prefix + key
        if isinstance(value, dict) and full != "DATASETS.REGISTER":
            yield from _set_keys(value, full + ".")
        else:
            yield full


# --- the table ----------------------------------------------------------------------------------------------------

def test_every_default_key_has_an_entry_and_every_entry_a_key():
    assert [key for key in DEFAULT_KEYS if option_for(key) is None] == []
    for option in OPTIONS:
        if option.key.endswith("."):
            assert any(key.startswith(option.key) for key in DEFAULT_KEYS), option.key
        else:
            assert option.key in DEFAULT_KEYS, option.key
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys)), "duplicate entries"


def test_entries_are_complete():
    for option in OPTIONS:
        assert option.status in (IMPLEMENTED, NO_EFFECT, REFUSED), option.key
        if option.status != IMPLEMENTED:
            assert option.note, option.key  # why no effect / why refused
            assert option.supported is None and not option.training_refused, option.key
        if option.supported is not None:
            assert option.supported_text, option.key


def test_counts_cover_every_key():
    found = counts()
    assert sum(found.values()) == len(DEFAULT_KEYS)
    assert found[REFUSED] > 0 and found[NO_EFFECT] > 0 and found[IMPLEMENTED] > found[REFUSED]


# --- official configs and README command lines pass ----------------------------------------------------------------

def _model_config_for(path):
    """Model configs stand alone; task configs (ODinW, LVIS, Flickr, _coco.yaml) are merged over GLIP-T's."""
    return None if "META_ARCHITECTURE" in path.read_text() else GLIP_T


@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=[str(p.relative_to(OFFICIAL)) for p in OFFICIAL_FILES])
def test_official_yaml_passes_the_audit(path):
    for key in _set_keys(yaml.safe_load(path.read_text())):
        assert option_for(key) is not None, key
    c = _fresh()
    if _model_config_for(path):
        c.merge_from_file(_model_config_for(path))
    c.merge_from_file(str(path))
    assert refusals(c, training=True) == []
    check_head_options(c, BERT_BASE_HIDDEN)  # and the head's option combinations run (bert-base-uncased)


def readme_opts(command):
    """KEY VALUE pairs of a README command line, placeholders and shell quoting resolved."""
    tokens = shlex.split(command["opts"].replace("\\(", "(").replace("\\)", ")"))
    pairs = []
    for i, token in enumerate(tokens):
        if KEY_TOKEN.match(token):
            value = tokens[i + 1]
            pairs += [token, re.sub(r"^\{.*\}$", "OUTPUT/placeholder", value)]
    return pairs


@pytest.mark.parametrize("command", README_COMMANDS, ids=[c["name"] for c in README_COMMANDS])
def test_readme_command_line_passes_the_audit(command):
    opts = readme_opts(command)
    for key in opts[::2]:
        assert option_for(key) is not None, key
    c = cli.merge_config(cli.base_config(), str(ROOT / command["config"]), opts,
                         training=command["tool"] != "test_grounding_net")
    if command.get("task_config"):
        cli.merge_config(c, None, opts, task_config=str(ROOT / command["task_config"]),
                         training=command["tool"] != "test_grounding_net")


def test_readme_keys_are_read():
    assert {"GLIPKNOW.PARALLEL_LANGUAGE_INPUT", "MODEL.RETINANET.DETECTIONS_PER_IMG", "SOLVER.TEST_WITH_INFERENCE",
            "MODEL.DYHEAD.FUSE_CONFIG.USE_LAYER_SCALE"} <= {k for c in README_COMMANDS for k in readme_opts(c)[::2]}


# --- refusals -----------------------------------------------------------------------------------------------------

def _changed(value):
    """A value of the same type as `value` that differs from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [3])
    if value is None:
        return "x"
    raise TypeError(value)


def _assign(c, key, value):
    parts = key.split(".")
    node = c
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


REFUSED_KEYS = [key for key in DEFAULT_KEYS if option_for(key).status == REFUSED]


@pytest.mark.parametrize("key", REFUSED_KEYS)
def test_a_refused_key_stops_the_check_naming_key_and_value(key):
    c = cli.merge_config(cli.base_config(), GLIP_T, [])
    default = c
    for part in key.split("."):
        default = default[part]
    value = CfgNode({"TASK": 1}) if isinstance(default, dict) else _changed(default)
    _assign(c, key, value)
    with pytest.raises(RefusedOptionError) as err:
        check_config(c)
    assert [r[0] for r in err.value.refusals] == [key]
    assert key in str(err.value) and repr(value) in str(err.value)
    assert isinstance(err.value, ValueError)


# unsupported example values of the implemented keys that accept only some values
UNSUPPORTED = {
    "MODEL.RPN_ONLY": False, "MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.RPN_ARCHITECTURE": "ATSS",
    "MODEL.BACKBONE.CONV_BODY": "R-50-FPN", "MODEL.FPN.USE_SPP": True, "MODEL.FPN.USE_PAN": True,
    "MODEL.FPN.USE_DYHEAD": True, "MODEL.FPN.RETURN_SWINT_FEATURE_BEFORE_FUSION": True, "MODEL.SWINT.VERSION": "v2",
    "MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE": "clip", "MODEL.LANGUAGE_BACKBONE.MODEL_TYPE": "roberta-base",
    "MODEL.DYHEAD.CONV_FUNC": "gn", "MODEL.DYHEAD.SCORE_AGG": "MIN", "MODEL.DYHEAD.FUSE_CONFIG.TYPE": "MHA-S",
    "MODEL.DYHEAD.FUSE_CONFIG.SEPARATE_BIDIRECTIONAL": True, "SOLVER.OPTIMIZER": "ADAM",
    "SOLVER.WARMUP_METHOD": "cosine", "TEST.EVAL_TASK": "segmentation", "TEST.SPECIAL_NMS": "votes",
    "GLIPKNOW.LAN_FEATURE_AGG_TYPE": "max", "PATHS_CATALOG": "my/paths_catalog.py",
    "MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN": 16,
}


def test_every_restricted_key_has_an_unsupported_example():
    assert sorted(o.key for o in OPTIONS if o.supported is not None) == sorted(UNSUPPORTED)


@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_an_unsupported_value_stops_the_check(key):
    c = cli.merge_config(cli.base_config(), GLIP_T, [])
    _assign(c, key, UNSUPPORTED[key])
    with pytest.raises(RefusedOptionError, match=re.escape(key)) as err:
        check_config(c)
    assert key in [r[0] for r in err.value.refusals]


def test_parallel_language_input_is_refused_for_training_only():
    c = cli.merge_config(cli.base_config(), GLIP_T, ["GLIPKNOW.PARALLEL_LANGUAGE_INPUT", "True"])
    with pytest.raises(RefusedOptionError, match="GLIPKNOW.PARALLEL_LANGUAGE_INPUT"):
        check_config(c, training=True)


def test_test_with_inference_false_during_training_is_logged(caplog):
    with caplog.at_level("WARNING"):
        cli.merge_config(cli.base_config(), GLIP_T, ["TEST.DURING_TRAINING", "True"])
    assert "SOLVER.TEST_WITH_INFERENCE" in caplog.text


# --- the table agrees with the builders ---------------------------------------------------------------------------

def _tiny_model_cfg(key, value):
    from engine.test_inference import tiny_cfg

    c = tiny_cfg()
    _assign(c, key, value)
    if key == "MODEL.DYHEAD.FUSE_CONFIG.TYPE" or key.endswith("SEPARATE_BIDIRECTIONAL"):
        c.MODEL.DYHEAD.FUSE_CONFIG.EARLY_FUSE_ON = True
    return c


def _run_enforcer(name, key, value):
    c = _tiny_model_cfg(key, value)
    if name == "glip.modeling.detector.build_detection_model":
        from glip.modeling.detector import build_detection_model

        build_detection_model(c)
    elif name == "glip.solver.build.make_optimizer":
        from glip.solver.build import make_optimizer

        make_optimizer(c, torch.nn.Linear(2, 2))
    elif name == "glip.solver.build.make_lr_scheduler":
        from glip.solver.build import make_lr_scheduler

        make_lr_scheduler(c, torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), max_iter=10)
    elif name == "glip.engine.inference.check_options":
        from glip.engine.inference import check_options

        check_options(c)
    elif name == "glip.engine.tta.build_tta":
        from glip.engine.tta import build_tta

        build_tta(c)
    elif name == "glip.modeling.language.parallel.build_parallel_text_encoder":
        from glip.modeling.language.parallel import build_parallel_text_encoder

        c.GLIPKNOW.PARALLEL_LANGUAGE_INPUT = True
        build_parallel_text_encoder(c)
    else:
        raise AssertionError("unknown enforcer " + name)


ENFORCED = [o for o in OPTIONS if o.enforced_by]


@pytest.mark.parametrize("option", ENFORCED, ids=[o.key for o in ENFORCED])
def test_the_builder_refuses_what_the_table_refuses(option):
    with pytest.raises((NotImplementedError, ValueError, KeyError)):
        _run_enforcer(option.enforced_by, option.key, UNSUPPORTED[option.key])


# --- the README lists what is refused -----------------------------------------------------------------------------

def test_readme_differences_name_every_refused_key_and_the_counts():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Differences from the reference"):]
    section = section[: section.index("\n## ", 3)]
    named = set(re.findall(r"`([A-Z0-9_.]+)`", section))
    missing = [key for key in REFUSED_KEYS + sorted(UNSUPPORTED)
               if key not in named and key.split(".")[-1] not in named]
    assert missing == []
    found = counts()
    assert "*implemented* ({} keys)".format(found[IMPLEMENTED]) in section
    assert "({}: keys of heads".format(found[NO_EFFECT]) in section
    assert "*refused* ({})".format(found[REFUSED]) in section
