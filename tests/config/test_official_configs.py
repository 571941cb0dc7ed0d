"""Every official GLIP yaml merges into our defaults unchanged, and configs/ mirrors them."""
import ast
import json
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES

from glip.config import cfg

OFFICIAL = FIXTURES / "official_configs"
OFFICIAL_FILES = sorted(OFFICIAL.rglob("*.yaml"))
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _ids(paths):
    return [str(p.relative_to(OFFICIAL)) for p in paths]


def _decoded(raw):
    """A raw yaml leaf as yacs stores it: strings that are Python literals become the literal."""
    if isinstance(raw, str):
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    return raw


def _plain(value):
    """Nested CfgNode/dict/tuple/list -> dicts and lists, for comparison."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_node(merged, raw, path):
    for key, raw_value in raw.items():
        full = path + key
        assert key in merged, "{} missing after merge".format(full)
        if full == "DATASETS.REGISTER":
            # New entries are stored as given (yacs does not decode leaves of new nodes).
            for name, attrs in raw_value.items():
                assert _plain(merged[key][name]) == attrs, full + "." + name
            continue
        if isinstance(raw_value, dict):
            _check_node(merged[key], raw_value, full + ".")
            continue
        expected, got = _plain(_decoded(raw_value)), _plain(merged[key])
        assert got == expected, "{}: {!r} != {!r}".format(full, got, expected)
        assert type(got) is type(expected), "{}: type {} != {}".format(full, type(got), type(expected))


def test_fixture_set_is_complete():
    assert len(OFFICIAL_FILES) == 58


@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=_ids(OFFICIAL_FILES))
def test_official_config_merges_and_values_equal_the_file(path):
    merged = cfg.clone()
    merged.merge_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    _check_node(merged, raw, "")
    # Sequences keep the defaults' container type (tuple for dataset lists).
    assert isinstance(merged.DATASETS.TRAIN, tuple) and isinstance(merged.DATASETS.TEST, tuple)


ODINW_FILES = sorted(OFFICIAL.glob("odinw_*/*.yaml"))


@pytest.mark.parametrize("path", ODINW_FILES, ids=_ids(ODINW_FILES))
def test_odinw_override_category_becomes_the_json_category_list(path):
    raw = yaml.safe_load(path.read_text())
    merged = cfg.clone()
    merged.merge_from_file(str(path))
    categories = merged.DATASETS.OVERRIDE_CATEGORY
    text = raw["DATASETS"]["OVERRIDE_CATEGORY"]
    try:
        expected = json.loads(text)
    except json.JSONDecodeError:  # a few files write the list with Python quoting
        expected = ast.literal_eval(text)
    assert categories == expected
    assert all(isinstance(c, dict) and {"id", "name"} <= set(c) for c in categories)
    assert merged.DATASETS.TRAIN == ("train",) and "train" in merged.DATASETS.REGISTER
    if "CAPTION_PROMPT" in raw["DATASETS"]:
        prompt = merged.DATASETS.CAPTION_PROMPT
        assert isinstance(prompt, list) and all({"prefix", "name", "suffix"} <= set(p) for p in prompt)


def test_register_entries_are_added_and_replace_nothing_else():
    merged = cfg.clone()
    merged.merge_from_file(str(OFFICIAL / "lvis/minival.yaml"))
    register = merged.DATASETS.REGISTER
    assert sorted(register) == ["lvis_evaluation_mini_val", "lvis_evaluation_val"]
    assert register.lvis_evaluation_mini_val.img_dir == "coco"
    assert register.lvis_evaluation_mini_val.ann_file == "coco/annotations/lvis_v1_minival_inserted_image_name.json"
    assert merged.DATASETS.TEST == ("lvis_evaluation_mini_val",)
    # A second task config adds to the registry of the same node.
    merged.merge_from_file(str(OFFICIAL / "odinw_13/pothole.yaml"))
    assert "lvis_evaluation_val" in merged.DATASETS.REGISTER and "train_1_3" in merged.DATASETS.REGISTER
    assert len(cfg.DATASETS.REGISTER) == 0


def test_unknown_key_error_names_key_and_file(tmp_path):
    bad = tmp_path / "bad_task.yaml"
    bad.write_text("MODEL:\n  DYHEAD:\n    NOT_A_REAL_KEY: 3\n")
    with pytest.raises(KeyError) as info:
        cfg.clone().merge_from_file(str(bad))
    message = str(info.value)
    assert "MODEL.DYHEAD.NOT_A_REAL_KEY" in message
    assert str(bad) in message


def test_type_mismatch_error_names_key_and_file(tmp_path):
    bad = tmp_path / "bad_type.yaml"
    bad.write_text("SOLVER:\n  MAX_EPOCH: twelve\n")
    with pytest.raises(ValueError) as info:
        cfg.clone().merge_from_file(str(bad))
    assert "SOLVER.MAX_EPOCH" in str(info.value) and str(bad) in str(info.value)


def test_unknown_command_line_key_error_names_key():
    with pytest.raises(AssertionError) as info:
        cfg.clone().merge_from_list(["MODEL.DYHEAD.NOPE", "1"])
    assert "MODEL.DYHEAD.NOPE" in str(info.value) and "command-line" in str(info.value)


def test_override_category_given_as_option_string_is_decoded_like_in_a_file():
    merged = cfg.clone()
    merged.merge_from_list(["DATASETS.OVERRIDE_CATEGORY", '[{"id": 1, "name": "tree", "supercategory": "plant"}]'])
    assert merged.DATASETS.OVERRIDE_CATEGORY == [{"id": 1, "name": "tree", "supercategory": "plant"}]


@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=_ids(OFFICIAL_FILES))
def test_our_config_merges_to_the_same_config_as_the_official_one(path):
    ours_path = REPO_CONFIGS / path.relative_to(OFFICIAL)
    assert ours_path.is_file(), "configs/{} is missing".format(path.relative_to(OFFICIAL))
    official, ours = cfg.clone(), cfg.clone()
    official.merge_from_file(str(path))
    ours.merge_from_file(str(ours_path))
    assert yaml.safe_load(ours.dump()) == yaml.safe_load(official.dump())


def test_coco_task_config_names_the_coco_2017_splits():
    merged = cfg.clone()
    merged.merge_from_file(str(REPO_CONFIGS / "coco/val.yaml"))
    assert merged.DATASETS.TEST == ("coco_2017_val",)
    assert merged.DATASETS.TRAIN == ("coco_2017_train",)
