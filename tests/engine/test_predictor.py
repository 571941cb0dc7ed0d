"""GLIPDemo (glip/engine/predictor.py): batched prediction, prompt chunking, input checks, the GLIP-T golden."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_golden
from helpers.glip_model import fill_model_, golden_config, match_detections

from glip.data.positive_map import create_positive_map, create_positive_map_label_to_token_from_positive_map
from glip.engine.predictor import GLIPDemo, ImageLoadError, load_image, to_bgr_uint8
from glip.engine.weights import WeightLoadError
from glip.structures.image_list import to_image_list

TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", 24, "MODEL.SWINT.DEPTHS", (1, 1, 1, 1), "MODEL.SWINT.NUM_HEADS", (1, 1, 1, 1),
             "MODEL.SWINT.OUT_CHANNELS", (24, 48, 96, 192), "MODEL.DYHEAD.NUM_CONVS", 1,
             "MODEL.DYHEAD.USE_CHECKPOINT", False, "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", ""]
NAMES = ["cat", "dog", "traffic light", "person", "wooden table", "bicycle", "toothbrush", "hair drier",
         "surfboard", "teddy bear", "fire hydrant", "cell phone", "pizza", "kite", "couch", "bowl"]


def tiny_config():
    from glip.config import cfg

    c = cfg.clone()
    c.merge_from_file("configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
    c.merge_from_list(TINY_OPTS)
    return c


def build_tiny_demo(**kwargs):
    """GLIP with a 1-block-per-stage Swin, one dyhead layer and a 1-layer BERT, golden-filled (fast on CPU)."""
    demo = GLIPDemo(tiny_config(), load_model=False, **kwargs)
    bert = demo.model.language_backbone.body.model
    bert.encoder.layer = torch.nn.ModuleList(list(bert.encoder.layer[:1]))
    bert.config.num_hidden_layers = 1
    fill_model_(demo.model)
    return demo


@pytest.fixture(scope="module")
def demo():
    d = build_tiny_demo(confidence_threshold=0.0)
    yield d


@pytest.fixture(autouse=True)
def restore(demo):
    yield
    demo.max_query_len = 256
    demo.max_classes_per_prompt = 80
    demo.confidence_threshold = 0.0


def random_image(h, w, seed):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def as_dict(boxlist):
    return {"boxes": boxlist.bbox, "scores": boxlist.get_field("scores"), "labels": boxlist.get_field("labels")}


def assert_same_detections(a, b, box_tol=1e-3, score_tol=1e-5):
    assert len(a) == len(b)
    assert match_detections(as_dict(a), as_dict(b), box_tol, score_tol) == []


def count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda m, args, out: calls.append(len(out)))
    return calls, handle


def test_compute_prediction_in_original_pixels(demo):
    image = random_image(90, 150, 0)
    pred = demo.compute_prediction(image, "a cat sitting on a wooden table")
    assert pred.size == (150, 90)
    assert demo.entities == ["a cat", "a wooden table"]
    assert set(pred.get_field("labels").tolist()) <= {1, 2}
    boxes = pred.bbox
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 90).all()
    top = demo.inference(image, "a cat sitting on a wooden table")
    assert (top.get_field("scores")[:-1] >= top.get_field("scores")[1:]).all()


def test_predict_batched_equals_one_by_one(demo):
    # 120x200 and 100x210 pad to the same 128x224 input and share a batch; 70x90 runs in its own batch
    images = [random_image(120, 200, 1), random_image(70, 90, 2), random_image(100, 210, 3)]
    calls, handle = count_forwards(demo.model)
    try:
        batched = demo.predict(images, NAMES[:4], threshold=0.05)
    finally:
        handle.remove()
    assert sorted(calls) == [1, 2]
    for image, result in zip(images, batched):
        single = demo._threshold(demo.compute_prediction(image, NAMES[:4]), 0.05)
        assert result.size == (image.shape[1], image.shape[0])
        assert_same_detections(result, single)


def test_category_list_that_fits_is_the_reference_prompt(demo):
    image = random_image(64, 96, 4)
    pred = demo.compute_prediction(image, NAMES)
    assert len(demo.prompts) == 1
    # the reference demo's prompt for a list: "name . " per name, one positive-map row per name
    caption, spans = "", []
    for name in NAMES:
        spans.append([[len(caption), len(caption) + len(name)]])
        caption += name + " . "
    tokenized = demo.tokenizer([caption], return_tensors="pt")
    label_to_token = create_positive_map_label_to_token_from_positive_map(create_positive_map(tokenized, spans), plus=1)
    with torch.no_grad():
        direct = demo.model(to_image_list(demo.transform(image), 32), captions=[caption],
                            positive_map=label_to_token)[0].resize((96, 64))
    assert demo.prompts[0].caption == caption
    assert torch.equal(pred.bbox, direct.bbox)
    assert torch.equal(pred.get_field("labels"), direct.get_field("labels"))


def test_long_category_list_is_chunked_and_merged(demo):
    image = random_image(64, 96, 5)
    demo.max_query_len = 24  # 16 names -> 2 prompts of whole names
    merged = demo.compute_prediction(image, NAMES)
    chunks = [p.labels for p in demo.prompts]
    assert len(chunks) == 2 and sum(chunks, []) == list(range(1, 17))
    assert all(len(demo.tokenizer(p.caption)["input_ids"]) <= 24 for p in demo.prompts)
    assert demo.entities == NAMES
    demo.max_query_len = 256
    union = []
    for labels in chunks:  # each chunk alone, labels shifted back to the full list
        alone = demo.compute_prediction(image, [NAMES[i - 1] for i in labels])
        alone.add_field("labels", torch.as_tensor(labels)[alone.get_field("labels") - 1])
        union.append(alone)
    all_scores = torch.cat([u.get_field("scores") for u in union])
    kth = all_scores.sort(descending=True).values[99]
    assert len(merged) >= 100 and (merged.get_field("scores") >= kth).all()
    for label in range(1, 17):
        ours = merged[merged.get_field("labels") == label]
        source = union[0 if label in chunks[0] else 1]
        theirs = source[(source.get_field("labels") == label) & (source.get_field("scores") >= kth)]
        assert_same_detections(ours, theirs)


def lvis_size_names():
    """The 1203 LVIS-like names of test_chunking.py (loaded by path: test modules are not a package)."""
    spec = importlib.util.spec_from_file_location("_chunking_names", Path(__file__).with_name("test_chunking.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lvis_size_names()


@pytest.mark.slow
def test_lvis_size_vocabulary(demo):
    """1203 names (about 15 prompts) on the tiny model: every chunk runs and its labels come back global."""
    names = lvis_size_names()
    pred = demo.predict([random_image(32, 32, 6)], names, threshold=0.0)[0]
    assert len(demo.prompts) > 1 and sum((p.labels for p in demo.prompts), []) == list(range(1, 1204))
    assert all(len(p.labels) <= 80 for p in demo.prompts)
    labels = pred.get_field("labels")
    assert len(pred) > 0 and labels.min() >= 1 and labels.max() <= 1203
    chunk_of = {label: k for k, p in enumerate(demo.prompts) for label in p.labels}
    assert len({chunk_of[int(v)] for v in labels}) > 1  # detections come from several prompts
    assert len(demo.label_names(pred)) == len(pred)


@pytest.mark.parametrize("caption", ["", "   ", "\n"])
def test_empty_caption(demo, caption):
    with pytest.raises(ValueError, match="empty"):
        demo.compute_prediction(random_image(32, 32, 0), caption)


def test_bad_class_lists(demo):
    for names in ([], ["cat", " "], ["cat", 3]):
        with pytest.raises(ValueError, match="class names"):
            demo.predict([random_image(32, 32, 0)], names)


def test_phrase_not_in_caption(demo):
    image = random_image(32, 32, 0)
    with pytest.raises(ValueError, match="'dog' not found"):
        demo.compute_prediction(image, "a cat on a table", custom_entity=[{"span": "dog"}])
    with pytest.raises(ValueError, match="outside caption"):
        demo.compute_prediction(image, "a cat", custom_entity=[{"char_bounds": (2, 40)}])
    with pytest.raises(ValueError, match="cover no token"):
        demo.compute_prediction(image, "a cat  ", custom_entity=[{"char_bounds": (5, 7)}])


def test_caption_too_long(demo):
    demo.max_query_len = 8
    with pytest.raises(ValueError, match="more than the language model"):
        demo.compute_prediction(random_image(32, 32, 0), "a cat sitting on a wooden table in the kitchen")


def test_more_names_than_class_columns_are_chunked(demo):
    demo.max_classes_per_prompt = 3
    demo.build_prompts(NAMES[:7])
    assert [p.labels for p in demo.prompts] == [[1, 2, 3], [4, 5, 6], [7]]
    with pytest.raises(ValueError, match="at most 3"):
        demo.build_prompts("a cat, a dog, a man, a car and a tree")


def test_separator_caption_too_long_is_chunked(demo):
    demo.max_query_len = 12
    demo.build_prompts("cat. dog. traffic light. person. bicycle.")
    assert len(demo.prompts) > 1 and demo.entities == ["cat", "dog", "traffic light", "person", "bicycle"]


def test_image_conversions():
    bgr = random_image(8, 10, 7)
    gray = bgr[:, :, 0]
    np.testing.assert_array_equal(to_bgr_uint8(gray), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(to_bgr_uint8(gray[:, :, None]), np.repeat(gray[:, :, None], 3, 2))
    bgra = np.concatenate([bgr, np.full((8, 10, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_bgr_uint8(bgra), bgr)
    np.testing.assert_array_equal(to_bgr_uint8(bgr.astype(np.uint16) * 257), bgr)
    np.testing.assert_array_equal(to_bgr_uint8(bgr.astype(np.float32) / 255), bgr)
    with pytest.raises(ValueError, match="image array"):
        to_bgr_uint8(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="image array"):
        to_bgr_uint8("image.png")


def test_grayscale_rgba_16bit_images_run(demo):
    bgr = random_image(40, 60, 8)
    reference = demo.compute_prediction(bgr, ["cat", "dog"])
    gray = bgr[:, :, 1]
    converted = [np.concatenate([bgr, np.zeros((40, 60, 1), np.uint8)], 2), bgr.astype(np.uint16) * 257,
                 gray, gray[:, :, None].astype(np.uint16) * 257]
    results = demo.predict(converted, ["cat", "dog"], threshold=0.0)
    assert_same_detections(results[0], demo._threshold(reference, 0.0))
    assert_same_detections(results[1], demo._threshold(reference, 0.0))
    assert_same_detections(results[2], results[3])


def test_load_image_files(tmp_path):
    from PIL import Image

    rgb = random_image(6, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb[:, :, ::-1])
    Image.fromarray(np.concatenate([rgb, np.full((6, 9, 1), 128, np.uint8)], 2), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb[:, :, ::-1])
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"), np.repeat(rgb[:, :, :1], 3, 2))
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "gray16.png"), np.repeat(rgb[:, :, :1], 3, 2))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt"):
        load_image(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_predict_names_unreadable_files(demo, tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"GIF89a-but-not-really")
    with pytest.raises(ImageLoadError, match="photo.jpg"):
        demo.predict([str(tmp_path / "photo.jpg")], ["cat"])


def test_weight_file_not_matching_config(demo, tmp_path):
    state = {k: v.clone() for k, v in demo.model.state_dict().items()}
    before_keys = list(state)
    before = demo.model.rpn.head.bbox_pred.weight.clone()
    del state["rpn.head.bbox_pred.weight"]
    state["rpn.head.extra_layer.weight"] = torch.zeros(3)
    state["backbone.fpn.fpn_inner2.weight"] = torch.zeros(1)
    path = tmp_path / "model.pth"
    torch.save({"model": state}, path)
    with pytest.raises(WeightLoadError) as err:
        demo.load_weights(path)
    message = str(err.value)
    assert "1 of {} tensors are missing from the file (first: rpn.head.bbox_pred.weight)".format(len(before_keys)) \
        in message
    assert "1 tensors are in the file but not in the model (first: rpn.head.extra_layer.weight)" in message
    assert "differ in shape (first: backbone.fpn.fpn_inner2.weight (file (1,)" in message
    assert torch.equal(demo.model.rpn.head.bbox_pred.weight, before)  # nothing loaded


def test_run_on_web_image(demo):
    image = random_image(48, 64, 10)
    drawn, top = demo.run_on_web_image(image, ["cat", "dog"], thresh=0.0)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert len(top) > 0 and not np.array_equal(drawn, image)


@pytest.mark.slow
def test_glip_tiny_golden_free_caption():
    """GLIP-T filled with the golden rule reproduces the reference's detections on chelsea at 320 px."""
    from glip.modeling.detector import build_detection_model

    golden = load_golden("infer_chelsea_320.pt")
    free = golden["size320"]["captions"]["free"]
    cfg = golden_config()
    model = fill_model_(build_detection_model(cfg)).eval()
    demo = GLIPDemo(cfg, load_model=False, min_image_size=320, model=model)
    entities = [{"char_bounds": tuple(span[0])} for span in free["tokens_positive"]]
    bgr = golden["image"]["orig_rgb_uint8"].numpy()[:, :, ::-1].copy()
    pred = demo.compute_prediction(bgr, free["caption"], custom_entity=entities)
    det = free["detections"]
    assert demo.positive_map_label_to_token == {int(k): v for k, v in free["positive_map_label_to_token"].items()}
    ours = as_dict(pred)
    gold = {"boxes": det["boxes_orig"], "scores": det["scores"], "labels": det["labels"]}
    assert len(pred) == len(det["scores"])
    assert match_detections(ours, gold) == []
