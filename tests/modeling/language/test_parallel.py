"""Parallel class texts (GLIPKNOW.PARALLEL_LANGUAGE_INPUT) on the tiny GLIP: each class text is encoded as if
alone and owns one position; the evaluation loop scores class k against its own position."""
import pytest
import torch
from helpers import FIXTURES
from helpers.glip_model import fill_model_

from glip.modeling.detector import build_detection_model
from glip.modeling.language.parallel import ParallelTextEncoder, build_parallel_text_encoder

from engine.test_inference import _load, _run, tiny_cfg, write_tiny_coco

TEXTS = ["cat: a small domesticated mammal", "traffic light", "tree: a tall plant with a trunk and branches"]


@pytest.fixture(scope="module")
def parallel_glip():
    model = build_detection_model(tiny_cfg(GLIPKNOW__PARALLEL_LANGUAGE_INPUT=True))
    fill_model_(model, salt="#tiny")
    with torch.no_grad():
        model.rpn.head.bias0.fill_(0.0)
        model.rpn.head.log_scale.fill_(0.0)
    return model.eval()


def alone(model, text):
    """(hidden, embedded, their valid-token masks) of one text run through the language backbone by itself."""
    tokens = model.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        out = model.language_backbone(tokens["input_ids"], tokens["attention_mask"])
    return out["hidden"][0], out["embedded"][0], tokens["attention_mask"][0]


@pytest.mark.parametrize("aggregation", ["first", "mean"])
def test_each_class_text_owns_one_position_encoded_alone(parallel_glip, aggregation):
    with torch.no_grad():
        language = ParallelTextEncoder(aggregation)(parallel_glip, [TEXTS, TEXTS], torch.device("cpu"))
    assert language["hidden"].shape == (2, 4, 768) and language["embedded"].shape == (2, 4, 768)
    assert language["masks"].tolist() == [[1, 1, 1, 0]] * 2
    assert language["aggregate"] is None and language["mlm_labels"] is None
    for position, text in enumerate(TEXTS + [""]):
        hidden, embedded, mask = alone(parallel_glip, text)
        if aggregation == "first":
            expected_h, expected_e = hidden[0], embedded[0]
        else:
            expected_h = (hidden * mask[:, None]).sum(0) / mask.sum()
            expected_e = (embedded * mask[:, None]).sum(0) / mask.sum()
        torch.testing.assert_close(language["hidden"][1, position], expected_h, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(language["embedded"][0, position], expected_e, atol=1e-4, rtol=1e-4)


def test_refusals(parallel_glip):
    with pytest.raises(ValueError, match="LAN_FEATURE_AGG_TYPE"):
        ParallelTextEncoder("max")
    with pytest.raises(TypeError, match="list of class texts"):
        ParallelTextEncoder()(parallel_glip, ["a cat"], torch.device("cpu"))
    with pytest.raises(ValueError, match="share"):
        ParallelTextEncoder()(parallel_glip, [TEXTS, TEXTS[:2]], torch.device("cpu"))
    parallel_glip.train()
    try:
        with pytest.raises(RuntimeError, match="training"):
            ParallelTextEncoder()(parallel_glip, [TEXTS], torch.device("cpu"))
    finally:
        parallel_glip.eval()
    assert build_parallel_text_encoder(tiny_cfg()) is None
    with pytest.raises(ValueError, match="MLM_LOSS"):
        c = tiny_cfg(GLIPKNOW__PARALLEL_LANGUAGE_INPUT=True)
        c.MODEL.DYHEAD.FUSE_CONFIG.MLM_LOSS = True
        build_parallel_text_encoder(c)


def test_knowledge_evaluation_scores_each_class_against_its_text(parallel_glip, tmp_path, monkeypatch):
    """TEST.SUBSET 1: the first image; its detections are the model's on the knowledge texts of the categories
    (tiny_knowledge.yaml, def_wn) with {category id: [position]}."""
    from glip.data.build import make_data_loader
    from glip.structures.image_list import to_image_list

    write_tiny_coco(tmp_path)
    monkeypatch.setenv("DATASET", str(tmp_path))
    cfg = tiny_cfg(GLIPKNOW__PARALLEL_LANGUAGE_INPUT=True, GLIPKNOW__KNOWLEDGE_TYPE="def_wn", TEST__IMS_PER_BATCH=1,
                   TEST__SUBSET=1, GLIPKNOW__KNOWLEDGE_FILE=str(FIXTURES / "knowledge" / "tiny_knowledge.yaml"))
    _run(parallel_glip, cfg, str(tmp_path / "out"))
    prediction = _load(tmp_path / "out/predictions.pth")[0]
    texts = ["cat: feline mammal usually having thick soft fur",
             "traffic light: a visual signal to control the flow of traffic at intersections", "tree"]
    image = to_image_list([make_data_loader(cfg, is_train=False)[0].dataset[0][0]], 32)
    with torch.no_grad():
        expected = parallel_glip(image, captions=[texts], positive_map={1: [0], 2: [1], 3: [2]})[0]
    assert len(prediction) == len(expected) > 0
    assert torch.equal(prediction.get_field("labels"), expected.get_field("labels"))
    torch.testing.assert_close(prediction.get_field("scores"), expected.get_field("scores"))
