"""CocoGrounding and COCODataset on tiny generated COCO-format datasets, sample by sample."""
import random

import pytest
import torch
from tiny_datasets import write_coco

from glip.data.datasets.coco import COCODataset, parse_override_category
from glip.data.datasets.coco_grounding import CocoGrounding
from glip.data.positive_map import load_tokenizer
from glip.data.transforms import Compose, RandomHorizontalFlip, Resize, ToTensor

CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "traffic_light"}, {"id": 7, "name": "dog"}]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def tiny(tmp_path):
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 11, "file_name": "b.jpg", "width": 40, "height": 40},
        {"id": 12, "file_name": "empty.jpg", "width": 32, "height": 32},
    ]
    annotations = [
        {"image_id": 10, "bbox": [4, 6, 20, 10], "category_id": 1},
        {"image_id": 10, "bbox": [50, 30, 30, 30], "category_id": 7},   # leaves the image: clipped
        {"image_id": 10, "bbox": [70, 5, 5, 5], "category_id": 3},      # fully outside: removed
        {"image_id": 10, "bbox": [1, 1, 5, 5], "category_id": 3, "iscrowd": 1},
        {"image_id": 11, "bbox": [2, 2, 10, 10], "category_id": 3},
    ]
    return write_coco(tmp_path, images, annotations, CATS)


def test_caption_boxes_and_positive_map_sorted(tiny, tokenizer):
    img_dir, ann = tiny
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer, disable_shuffle=True, separation_tokens=". ")
    assert len(ds) == 2  # the image without annotations is skipped
    assert ds.ind_to_class == {1: "person", 2: "traffic_light", 3: "dog"}
    img, target, idx = ds[0]
    assert idx == 0 and img.size == (64, 48)
    caption = target.get_field("caption")
    assert caption == "person. traffic light. dog"
    # person box: xywh -> xyxy with +1 convention; dog clipped to (w-1, h-1); the outside box removed
    torch.testing.assert_close(target.bbox, torch.tensor([[4.0, 6.0, 23.0, 15.0], [50.0, 30.0, 63.0, 47.0]]))
    assert target.get_field("labels").tolist() == [1, 3]
    assert ds.box_stats == {"clipped": 1, "removed": 1}
    assert target.get_field("tokens_positive") == [[[0, 6]], [[23, 26]]]
    pm = target.get_field("positive_map")
    assert pm.shape == (2, 256)
    ids = tokenizer(caption)["input_ids"]
    assert ids[1] == 2711 and pm[0, 1] == pytest.approx(1 / (1 + 1e-6))
    assert torch.nonzero(pm[1]).flatten().tolist() == [6]
    assert ids[6] == tokenizer.convert_tokens_to_ids("dog")
    assert target.get_field("image_id").tolist() == [10]
    assert target.get_field("greenlight_map")[1] == 1


def test_shuffle_changes_order_but_spans_follow(tiny, tokenizer):
    img_dir, ann = tiny
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer, disable_shuffle=False, separation_tokens=". ",
                       rng=random.Random(3))
    captions = set()
    for _ in range(12):
        _, target, _ = ds[0]
        caption = target.get_field("caption")
        captions.add(caption)
        spans = target.get_field("tokens_positive")
        assert caption[spans[0][0][0]: spans[0][0][1]] == "person"
        assert caption[spans[1][0][0]: spans[1][0][1]] == "dog"
    assert len(captions) > 1


def test_caption_prompt_and_override(tiny, tokenizer):
    img_dir, ann = tiny
    override = parse_override_category('[{"id": 1, "name": "human"}, {"id": 3, "name": "light"}, '
                                       '{"id": 7, "name": "puppy"}]')
    prompt = [{"prefix": "a ", "name": "man", "suffix": ""}, {"prefix": "", "name": "lamp", "suffix": " pole"},
              {"prefix": "", "name": "dog", "suffix": "."}]
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer, disable_shuffle=True, separation_tokens=". ",
                       override_category=override)
    assert ds[1][1].get_field("caption") == "human. light. puppy"
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer, disable_shuffle=True, separation_tokens=". ",
                       use_caption_prompt=True, caption_prompt=prompt)
    _, target, _ = ds[1]
    assert target.get_field("caption") == "a man. lamp pole. dog."
    assert target.get_field("tokens_positive") == [[[7, 11]]]
    with pytest.raises(ValueError):
        CocoGrounding(img_dir, ann, tokenizer=tokenizer, disable_shuffle=False, use_caption_prompt=True,
                      caption_prompt=prompt)[0]


def test_token_limit_drops_classes_and_boxes(tmp_path, tokenizer):
    cats = [{"id": i, "name": "category number {}".format(i)} for i in range(1, 6)]
    images = [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32}]
    annotations = [{"image_id": 1, "bbox": [1, 1, 5 + i, 5], "category_id": i} for i in range(1, 6)]
    img_dir, ann = write_coco(tmp_path, images, annotations, cats)
    # each "category number N. " is 5 tokens; a budget of 12 - 2 = 10 keeps two classes
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer, separation_tokens=". ", max_query_len=12,
                       special_safeguard_for_coco_grounding=True, random_sample_negative=0, rng=random.Random(0))
    _, target, _ = ds[0]
    labels = target.get_field("labels").tolist()
    assert len(labels) == 2 and len(target) == 2
    caption = target.get_field("caption")
    for label, spans in zip(labels, target.get_field("tokens_positive")):
        assert caption[spans[0][0]: spans[0][1]] == "category number {}".format(label)


@pytest.mark.parametrize("swap", [False, True])
def test_flip_keeps_caption_unless_swap_asked(tmp_path, tokenizer, swap):
    cats = [{"id": 1, "name": "left hand"}, {"id": 2, "name": "right hand"}]
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}]
    annotations = [{"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 1}]
    img_dir, ann = write_coco(tmp_path, images, annotations, cats)
    transforms = Compose([Resize(10, 100), RandomHorizontalFlip(1.0, swap_left_right=swap, tokenizer=tokenizer),
                          ToTensor()])
    ds = CocoGrounding(img_dir, ann, transforms=transforms, tokenizer=tokenizer, disable_shuffle=True,
                       separation_tokens=". ")
    img, target, _ = ds[0]
    assert img.shape == (3, 10, 20)
    caption = target.get_field("caption")
    assert caption == ("right hand. left hand" if swap else "left hand. right hand")
    (beg, end), = target.get_field("tokens_positive")[0]
    assert caption[beg:end] == ("right hand" if swap else "left hand")  # the spans follow the words
    torch.testing.assert_close(target.bbox, torch.tensor([[15.0, 0.0, 19.0, 4.0]]))
    assert torch.nonzero(target.get_field("positive_map")[0]).flatten().tolist() == [1, 2]


def test_missing_image_named(tmp_path, tokenizer):
    images = [{"id": 1, "file_name": "gone.jpg", "width": 20, "height": 10}]
    img_dir, ann = write_coco(tmp_path, images, [{"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 1}],
                              CATS, write_images=False)
    ds = CocoGrounding(img_dir, ann, tokenizer=tokenizer)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        ds[0]


def test_coco_dataset_eval_keeps_empty_images(tiny):
    img_dir, ann = tiny
    ds = COCODataset(ann, img_dir, remove_images_without_annotations=False)
    assert len(ds) == 3
    assert ds.categories() == {1: "person", 2: "traffic_light", 3: "dog"}
    assert ds.contiguous_category_id_to_json_id == {1: 1, 2: 3, 3: 7}
    _, target, _ = ds[2]
    assert len(target) == 0 and target.bbox.shape == (0, 4) and target.get_field("labels").shape == (0,)
    _, target, _ = ds[0]
    assert target.get_field("labels").tolist() == [1, 3]
    assert ds.get_img_info(1)["width"] == 40
    assert len(COCODataset(ann, img_dir, remove_images_without_annotations=True)) == 2


def test_few_shot_subset(tmp_path):
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    images = [{"id": i, "file_name": "{}.jpg".format(i), "width": 16, "height": 16} for i in range(1, 5)]
    annotations = [{"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 1},
                   {"image_id": 2, "bbox": [0, 0, 5, 5], "category_id": 1},
                   {"image_id": 3, "bbox": [0, 0, 5, 5], "category_id": 2},
                   {"image_id": 4, "bbox": [0, 0, 5, 5], "category_id": 2}]
    img_dir, ann = write_coco(tmp_path, images, annotations, cats)
    assert COCODataset(ann, img_dir, True, few_shot=1).ids == [1, 3]
    assert COCODataset(ann, img_dir, True, few_shot=2).ids == [1, 2, 3, 4]
