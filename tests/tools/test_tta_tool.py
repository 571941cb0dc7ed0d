"""tools/test_grounding_net.py with test-time augmentation (TEST.USE_MULTISCALE) on the tiny GLIP of
test_test_grounding_net.py: it runs, writes the reference's files, and its detections are in original pixels."""
import json

import pytest
import torch

from tools.test_test_grounding_net import TINY_SIZES, load_tool, prepare_tiny_run


@pytest.mark.slow
def test_test_grounding_net_with_test_time_augmentation(tmp_path, monkeypatch):
    argv, gt_file = prepare_tiny_run(tmp_path, monkeypatch)
    out = tmp_path / "out"
    tta = ["TEST.USE_MULTISCALE", "True", "TEST.SCALES", "(64, 80)", "TEST.MAX_SIZE", "128", "TEST.NUM_CLASSES", "3"]
    assert load_tool().run(argv + tta + ["OUTPUT_DIR", str(out)]) == 0
    folder = out / "eval" / "tiny_glip" / "inference" / "test"
    predictions = torch.load(folder / "predictions.pth", weights_only=False)
    assert [p.size for p in predictions] == TINY_SIZES  # merged views, in original pixels
    assert sum(len(p) for p in predictions) == len(json.loads((folder / "bbox.json").read_text())) > 0
    assert "Test-time augmentation: 4 views per image" in (out / "eval" / "tiny_glip" / "log.txt").read_text()
