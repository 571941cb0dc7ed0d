"""Flickr30k-style (separate / merged GT) and mixed GoldG datasets on tiny generated json."""
import pytest
import torch
from tiny_datasets import write_coco

from glip.data.datasets.modulated import FlickrDataset, MixedDataset
from glip.data.positive_map import load_tokenizer
from glip.data.transforms import Compose, RandomHorizontalFlip, ToTensor

CAPTION = "a cat sitting on a wooden table on the left"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def _flickr(tmp_path, merged=False):
    images = [{"id": 1, "file_name": "1.jpg", "width": 60, "height": 40, "caption": CAPTION, "sentence_id": 0,
               "original_img_id": 1000, "dataset_name": "flickr",
               "tokens_positive_eval": [[[0, 5]], [[17, 31]]]}]
    if merged:
        anns = [{"image_id": 1, "bbox": [2, 3, 20, 10], "category_id": 1, "tokens_positive": [[0, 5]]},
                {"image_id": 1, "bbox": [0, 20, 60, 20], "category_id": 1, "tokens_positive": [[17, 31]]}]
    else:
        anns = [{"image_id": 1, "bbox": [2, 3, 20, 10], "category_id": 1, "tokens_positive": [[0, 5]]},
                {"image_id": 1, "bbox": [0, 20, 30, 20], "category_id": 1, "tokens_positive": [[17, 31]]},
                {"image_id": 1, "bbox": [30, 20, 30, 20], "category_id": 1, "tokens_positive": [[17, 31]]},
                {"image_id": 1, "bbox": [5, 5, 1, 8], "category_id": 1, "tokens_positive": [[0, 5]]}]  # w=1: dropped
    return write_coco(tmp_path, images, anns, [{"id": 1, "name": "object"}])


def test_flickr_separate_gt(tmp_path, tokenizer):
    img_dir, ann = _flickr(tmp_path)
    ds = FlickrDataset(img_dir, ann, tokenizer=tokenizer, is_train=False)
    img, target, idx = ds[0]
    assert len(target) == 3
    torch.testing.assert_close(target.bbox[0], torch.tensor([2.0, 3.0, 21.0, 12.0]))
    torch.testing.assert_close(target.bbox[2], torch.tensor([30.0, 20.0, 59.0, 39.0]))
    assert target.get_field("caption") == CAPTION
    pm = target.get_field("positive_map")
    assert pm.shape == (3, 256)
    assert torch.nonzero(pm[0]).flatten().tolist() == [1, 2]
    assert torch.nonzero(pm[1]).flatten().tolist() == [5, 6, 7]
    assert target.get_field("sentence_id") == 0 and target.get_field("original_img_id") == 1000
    assert target.get_field("dataset_name") == "flickr"
    assert target.get_field("nb_eval") == 2
    assert torch.nonzero(target.get_field("positive_map_eval")[1]).flatten().tolist() == [5, 6, 7]
    green = target.get_field("greenlight_map")
    assert green[1:11].eq(1).all() and green[0] == 0 and green[11] == 0


def test_flickr_merged_gt_and_train_mode(tmp_path, tokenizer):
    img_dir, ann = _flickr(tmp_path, merged=True)
    ds = FlickrDataset(img_dir, ann, tokenizer=tokenizer, is_train=True, no_mask_for_gold=True)
    _, target, _ = ds[0]
    assert len(target) == 2 and not target.has_field("positive_map_eval")
    assert target.get_field("greenlight_map").eq(-1).all()


@pytest.mark.parametrize("swap", [False, True])
def test_flickr_flip_swaps_caption_only_when_asked(tmp_path, tokenizer, swap):
    img_dir, ann = _flickr(tmp_path, merged=True)
    flip = RandomHorizontalFlip(1.0, swap_left_right=swap, tokenizer=tokenizer)
    ds = FlickrDataset(img_dir, ann, transforms=Compose([flip, ToTensor()]), tokenizer=tokenizer)
    img, target, _ = ds[0]
    assert target.get_field("caption").endswith("on the right" if swap else "on the left")
    torch.testing.assert_close(target.bbox[0], torch.tensor([38.0, 3.0, 57.0, 12.0]))


def test_mixed_image_sources(tmp_path, tokenizer):
    images = [{"id": 1, "file_name": "c.jpg", "width": 30, "height": 30, "caption": "a dog", "data_source": "coco"},
              {"id": 2, "file_name": "v.jpg", "width": 20, "height": 30, "caption": "a bird", "data_source": "vg"}]
    anns = [{"image_id": 1, "bbox": [1, 1, 10, 10], "category_id": 1, "tokens_positive": [[2, 5]]},
            {"image_id": 2, "bbox": [1, 1, 10, 10], "category_id": 1, "tokens_positive": [[2, 6]]}]
    coco_dir, ann = write_coco(tmp_path / "coco", images[:1], anns[:1], [{"id": 1, "name": "o"}])
    vg_dir, _ = write_coco(tmp_path / "vg", images[1:], anns[1:], [{"id": 1, "name": "o"}])
    _, ann = write_coco(tmp_path / "ann", images, anns, [{"id": 1, "name": "o"}], write_images=False)
    ds = MixedDataset(coco_dir, vg_dir, ann, tokenizer=tokenizer)
    assert ds[0][0].size == (30, 30) and ds[1][0].size == (20, 30)
    assert ds[1][1].get_field("caption") == "a bird"
    assert ds.get_img_info(1)["width"] == 20
