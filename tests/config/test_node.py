"""glip.config.node: config errors are one-line ConfigErrors naming the key, the file or options, and a fix."""
import pytest

from glip.config import cfg
from glip.utils.errors import ConfigError


def test_unknown_key_suggests_the_closest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DYHEAD:\n    NUM_CONVZ: 3\n")
    with pytest.raises(ConfigError) as info:
        cfg.clone().merge_from_file(str(bad))
    assert isinstance(info.value, KeyError)
    assert str(info.value) == ("Non-existent config key: MODEL.DYHEAD.NUM_CONVZ (while merging config file {}); did "
                               "you mean MODEL.DYHEAD.NUM_CONVS?".format(bad))


def test_unknown_option_without_a_close_key_points_to_the_defaults():
    with pytest.raises(ConfigError, match="MODEL.QWERTY .*glip/config/defaults.py"):
        cfg.clone().merge_from_list(["MODEL.QWERTY", "1"])


def test_odd_option_list_is_named():
    with pytest.raises(ConfigError, match="odd length.*SOLVER.MAX_EPOCH"):
        cfg.clone().merge_from_list(["SOLVER.MAX_EPOCH"])


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found: .*nope.yaml"):
        cfg.clone().merge_from_file(str(tmp_path / "nope.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("MODEL:\n  DEVICE: [cpu\n")
    with pytest.raises(ConfigError, match="broken.yaml is not a readable yaml config .*line 2"):
        cfg.clone().merge_from_file(str(broken))
    with pytest.raises(ConfigError, match="is not a readable yaml config"):
        cfg.clone().merge_from_file(str(tmp_path))
