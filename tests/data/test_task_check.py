"""Up-front errors for custom fine-tuning tasks: missing categories, captions over the token limit."""
import json

import pytest

from glip.config import cfg as default_cfg
from glip.data.positive_map import load_tokenizer
from glip.data.task_check import TaskConfigError, caption_names, check_coco_task, check_registered_tasks


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bert-base-uncased")


def _cfg(**datasets):
    c = default_cfg.clone()
    c.defrost()
    c.DATASETS.SEPARATION_TOKENS = ". "
    for k, v in datasets.items():
        setattr(c.DATASETS, k, v)
    return c


def _coco(names, used=None):
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    used = used or [1]
    return {"images": [{"id": 1}], "categories": cats,
            "annotations": [{"id": k, "image_id": 1, "category_id": c, "bbox": [0, 0, 5, 5]}
                            for k, c in enumerate(used)]}


def test_valid_task_returns_caption_names(tokenizer):
    assert check_coco_task(_coco(["tree", "car"], [1, 2]), _cfg(), tokenizer) == ["tree", "car"]


def test_missing_categories(tokenizer):
    with pytest.raises(TaskConfigError, match="has no 'categories'"):
        check_coco_task({"images": [], "annotations": []}, _cfg(), tokenizer)
    with pytest.raises(TaskConfigError, match=r"category ids \[3\] that are missing"):
        check_coco_task(_coco(["tree", "car"], [1, 3]), _cfg(), tokenizer)


def test_caption_over_256_tokens_names_chunking(tokenizer):
    names = ["category number {}".format(i) for i in range(100)]  # 3 tokens + separator each: > 256
    with pytest.raises(TaskConfigError, match="MAX_QUERY_LEN = 256") as err:
        check_coco_task(_coco(names), _cfg(), tokenizer)
    assert "chunking" in str(err.value) and "TEST.CHUNKED_EVALUATION" in str(err.value)
    assert check_coco_task(_coco(names[:40]), _cfg(), tokenizer)  # 40 * 4 + 2 tokens fit


def test_override_category_names_are_the_caption():
    override = json.dumps([{"id": 1, "name": "pothole"}])
    c = _cfg(OVERRIDE_CATEGORY=override, USE_OVERRIDE_CATEGORY=True)
    assert caption_names(c, [{"id": 1, "name": "x"}]) == ["pothole"]
    assert caption_names(_cfg(OVERRIDE_CATEGORY=override), [{"id": 1, "name": "x"}]) == ["x"]


def test_registered_train_sets_are_checked(tmp_path, tokenizer):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": []}))
    c = _cfg(TRAIN=("train",), REGISTER=type(default_cfg)({"train": {"img_dir": str(tmp_path),
                                                                     "ann_file": str(ann)}}))
    with pytest.raises(TaskConfigError, match="dataset 'train'"):
        check_registered_tasks(c, tokenizer)
    assert check_registered_tasks(_cfg(TRAIN=("coco_2017_train",)), tokenizer) == 0
