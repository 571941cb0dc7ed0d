"""The package-free ONNX runner's input side (glip/export/runtime.py) against the reference: the test transform's
network input (golden), the resize rule, the tokenized caption and its positive map (golden), the prompts."""
import json

import numpy as np
import pytest
import torch
from helpers import REFERENCE, load_golden
from PIL import Image

from glip.data.transforms import Resize
from glip.export import runtime

CAPTIONS = json.loads((REFERENCE / "captions_and_positive_maps.json").read_text())


def settings(min_size, max_size):
    return dict(runtime.DEFAULT_SETTINGS, min_size=min_size, max_size=max_size)


@pytest.mark.parametrize("image", ["astronaut", "chelsea"])
def test_preprocess_is_the_golden_network_input(image):
    golden = load_golden(f"infer_{image}_320.pt")
    rgb = golden["image"]["orig_rgb_uint8"].numpy()
    images, hw = runtime.preprocess(Image.fromarray(rgb, "RGB"), settings(320, 512))
    assert hw == tuple(golden["size320"]["image_size_hw"])
    np.testing.assert_allclose(images, golden["size320"]["input_tensor"].numpy(), atol=1e-5, rtol=0)
    from_array, _ = runtime.preprocess(rgb, settings(320, 512))
    np.testing.assert_array_equal(from_array, images)


@pytest.mark.parametrize("wh", [(451, 300), (300, 451), (512, 512), (2000, 300), (800, 1333), (640, 480)])
@pytest.mark.parametrize("sizes", [(800, 1333), (320, 512), (480, None)])
def test_resize_rule_is_the_test_transforms(wh, sizes):
    h, w = Resize(*sizes).get_size(wh)
    assert runtime.resized_size(*wh, *sizes) == (w, h)


@pytest.mark.parametrize("key, phrases", [("free_form_main", ["a cat", "a wooden table"]),
                                          ("coco_detection_prompt", None)])
def test_text_inputs_are_the_golden_tokens_and_map(key, phrases):
    from glip.text import build_tokenizer

    golden = CAPTIONS[key]
    prompt = golden["caption"] if phrases else golden["category_names_in_label_order"]
    caption, spans, names = runtime.caption_and_spans(golden["caption"] if phrases else prompt, phrases)
    if not phrases:  # a class list is joined as the predictor joins it; use the golden caption's own spans
        assert caption == " . ".join(prompt) + " . " and names == prompt
        caption, spans, names = runtime.caption_and_spans(golden["caption"], prompt)
    tokenizer = build_tokenizer("bert-base-uncased")  # the shipped vocabulary (offline)
    input_ids, attention_mask, positive_map = runtime.text_inputs(tokenizer, caption, spans, 256)
    count = len(golden["input_ids"])
    assert input_ids.shape == (1, 256) and input_ids.dtype == np.int64
    assert input_ids[0, :count].tolist() == golden["input_ids"] and not input_ids[0, count:].any()
    assert attention_mask[0].tolist() == [1] * count + [0] * (256 - count)
    assert positive_map.shape == (len(names), 256) and positive_map.dtype == np.float32
    for label, tokens in golden["positive_map_label_to_token"].items():
        row = positive_map[int(label) - 1]
        assert np.flatnonzero(row).tolist() == tokens
        np.testing.assert_allclose(row[tokens], 1.0 / len(tokens))


def test_prompts_of_a_caption():
    assert runtime.caption_and_spans("person. dog. traffic light") == (
        "person. dog. traffic light", [(0, 6), (8, 11), (13, 26)], ["person", "dog", "traffic light"])
    assert runtime.caption_and_spans("a red car") == ("a red car", [(0, 9)], ["a red car"])
    with pytest.raises(ValueError, match="'bus' is not in caption"):
        runtime.caption_and_spans("a red car", ["bus"])


def test_boxes_back_to_original_pixels():
    """predict's last step: clip to the unpadded resized image, scale to the original size."""
    boxes = np.array([[10.0, 20.0, 600.0, 300.0]], np.float32)
    out = runtime.to_original_pixels(boxes, resized_hw=(320, 481), original_hw=(300, 451))
    np.testing.assert_allclose(out, [[10 * 451 / 481, 20 * 300 / 320, 480 * 451 / 481, 300 * 300 / 320]], rtol=1e-6)
    expected = torch.tensor([[10.0, 20.0, 480.0, 300.0]]) * torch.tensor([451 / 481, 300 / 320] * 2)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6)
