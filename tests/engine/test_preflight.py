"""glip.engine.preflight: the tools' cheap checks before a model is built (weights, datasets, captions)."""
import json
import random

import numpy as np
import pytest
import torch
from helpers.tiny import TINY_BERT_OPTS
from PIL import Image

from glip.engine import preflight
from glip.engine.weights import WeightLoadError
from glip.utils import cli
from glip.utils.errors import ConfigError, DataError, UntrustedCheckpointError, WeightFileNotFoundError

GLIP_T = "configs/pretrain/glip_Swin_T_O365_GoldG.yaml"
TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", "24", "MODEL.SWINT.DEPTHS", "(1, 1, 1, 1)", "MODEL.SWINT.NUM_HEADS",
             "(1, 1, 1, 1)", "MODEL.SWINT.OUT_CHANNELS", "(24, 48, 96, 192)", "MODEL.DYHEAD.NUM_CONVS", "1",
             "MODEL.DYHEAD.USE_CHECKPOINT", "False", "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""] + TINY_BERT_OPTS


@pytest.fixture(scope="module")
def tiny_cfg():
    return cli.merge_config(cli.base_config(), GLIP_T, TINY_OPTS)


@pytest.fixture(scope="module")
def tiny_state(tiny_cfg):
    from glip.modeling.detector import build_detection_model

    return build_detection_model(tiny_cfg).state_dict()


def test_manifest_is_the_built_models_shapes_and_draws_no_random_numbers(tiny_cfg, tiny_state):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    manifest = preflight.model_manifest(tiny_cfg)
    assert manifest == {k: tuple(v.shape) for k, v in tiny_state.items()}
    after = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    assert after == (torch.rand(1).item(), np.random.rand(), random.random())


def test_weight_is_found_as_the_loaders_find_it_and_must_fit(tiny_cfg, tiny_state, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MODEL").mkdir()
    torch.save({"model": {"module." + k: v for k, v in tiny_state.items()}}, tmp_path / "MODEL/tiny.pth")
    assert preflight.check_weight(tiny_cfg, "tiny.pth") == "./MODEL/tiny.pth"
    assert preflight.check_weight(tiny_cfg, "") is None
    with pytest.raises(WeightFileNotFoundError, match=r"weight file not found: nope.pth \(looked for nope.pth in "):
        preflight.check_weight(tiny_cfg, "nope.pth")
    state = dict(tiny_state)
    key = "rpn.head.bbox_pred.weight"
    state[key] = torch.zeros(8, *state[key].shape[1:])
    torch.save({"model": state}, tmp_path / "other.pth")
    with pytest.raises(WeightLoadError, match=r"other.pth does not fit the model of tiny.yaml: 1 of {} tensors differ "
                                              r"in shape \(first: rpn.head.bbox_pred.weight \(file \(8,".format(
                                                  len(tiny_state))):
        preflight.check_weight(tiny_cfg, str(tmp_path / "other.pth"), "tiny.yaml")


def test_start_weights_resume_file_and_language_weights(tiny_cfg, tiny_state, tmp_path, monkeypatch):
    monkeypatch.delenv("GLIP_TRUST_CHECKPOINTS", raising=False)
    cfg = tiny_cfg.clone()
    cfg.OUTPUT_DIR = str(tmp_path)
    # no checkpoint to resume from, no MODEL.WEIGHT: the BERT weights must be found (the 1-layer folder has none)
    with pytest.raises(WeightFileNotFoundError, match="bert_1layer.*MODEL.WEIGHT is not a full GLIP checkpoint"):
        preflight.check_start_weights(cfg)
    assert preflight.check_start_weights(cfg, pretrained_language=False) is None
    # a run to resume from: its checkpoint is checked (prompt-tuning modules may be in it), MODEL.WEIGHT is not
    state = dict(tiny_state, **{"rpn.tunable_linear.weight": torch.zeros(4, 4)})
    torch.save({"model": state, "iteration": 3}, tmp_path / "model_0000003.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")
    cfg.MODEL.WEIGHT = "nowhere.pth"
    assert preflight.check_start_weights(cfg) == str(tmp_path / "model_0000003.pth")
    torch.save({"model": state, "iteration": np.random.RandomState(0)}, tmp_path / "model_0000003.pth")
    with pytest.raises(UntrustedCheckpointError, match="model_0000003.pth"):
        preflight.check_start_weights(cfg)


def _task(tmp_path, monkeypatch, annotations, image_bytes=None):
    monkeypatch.setenv("DATASET", str(tmp_path))
    (tmp_path / "t").mkdir(exist_ok=True)
    Image.new("RGB", (32, 24)).save(tmp_path / "t/0.jpg")
    if image_bytes is not None:
        (tmp_path / "t/0.jpg").write_bytes(image_bytes)
    (tmp_path / "t/ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "0.jpg", "width": 32, "height": 24}], "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}]}))
    cfg = cli.base_config()
    cfg.merge_from_list(["DATASETS.REGISTER", {"val": {"ann_file": "t/ann.json", "img_dir": "t"}},
                         "DATASETS.TEST", ("val",), "DATASETS.TRAIN", ("val",)])
    return cfg


BOX = {"id": 1, "image_id": 1, "bbox": [1, 1, 9, 9], "area": 81, "iscrowd": 0}


def test_datasets_of_a_task(tmp_path, monkeypatch):
    cfg = _task(tmp_path, monkeypatch, [dict(BOX, category_id=1)])
    assert preflight.check_datasets(cfg, is_train=False) == ["val"]
    cfg = _task(tmp_path, monkeypatch, [dict(BOX, category_id=3)])
    with pytest.raises(DataError, match=r"dataset 'val' \(DATASETS.TEST\): 1 annotations use category ids outside"):
        preflight.check_datasets(cfg, is_train=False)
    cfg = _task(tmp_path, monkeypatch, [dict(BOX, category_id=1)], image_bytes=b"text")
    with pytest.raises(DataError, match=r"t/0.jpg \(UnidentifiedImageError\)"):
        preflight.check_datasets(cfg, is_train=False)
    cfg.DATASETS.REGISTER["val"]["ann_file"] = "t/gone.json"
    with pytest.raises(DataError, match=r"dataset 'val' \(DATASETS.TEST\): Cannot find t/gone.json in .*\$DATASET"):
        preflight.check_datasets(cfg, is_train=False)
    cfg.DATASETS.TEST = ("not_a_dataset",)
    with pytest.raises(ConfigError, match="DATASETS.TEST: Dataset not available in the catalog: not_a_dataset"):
        preflight.check_datasets(cfg, is_train=False)


def test_captions_and_class_names():
    from glip.data.positive_map import load_tokenizer

    tokenizer = load_tokenizer("bert-base-uncased")
    preflight.check_caption("a cat on a table", tokenizer, 256)
    preflight.check_caption(["cat", "traffic light"] * 100, tokenizer, 256)  # long lists are split into prompts
    preflight.check_caption("cat. traffic light. " * 100, tokenizer, 256)  # so are "a. b. c." captions
    with pytest.raises(DataError, match="the caption is empty"):
        preflight.check_caption("  ", tokenizer, 256)
    with pytest.raises(DataError, match="has 11 tokens, more than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN = 10"):
        preflight.check_caption("a cat on a table next to a dog", tokenizer, 10)
    with pytest.raises(DataError, match="empty class name"):
        preflight.check_caption(["cat", " "], tokenizer, 256)
    with pytest.raises(DataError, match="the class name 'a very long name of a class' alone has 9 tokens"):
        preflight.check_caption(["cat", "a very long name of a class"], tokenizer, 6)
