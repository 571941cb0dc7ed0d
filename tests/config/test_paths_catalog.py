"""DatasetCatalog: names, factories, path resolution under $DATASET, DATASETS.REGISTER."""
import os

import pytest
from helpers import FIXTURES, REFERENCE

from glip.config import cfg
from glip.config.paths_catalog import DatasetCatalog, ModelCatalog, register_datasets, try_to_find

E2E = REFERENCE / "end_to_end"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty working directory and a $DATASET root; the catalog is restored afterwards."""
    work, root = tmp_path / "work", tmp_path / "datasets"
    work.mkdir()
    root.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DATASET", str(root))
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    return root


def _touch(root, *relpaths):
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".json", ".yaml")):
            path.write_text("{}")
        else:
            path.mkdir(exist_ok=True)


def test_reference_dataset_names_are_present():
    for name in ("coco_2017_train", "coco_2017_val", "coco_grounding_train", "flickr30k_train", "flickr30k_val",
                 "flickr30k_test", "mixed_train", "mixed_train_no_coco", "object365_dt_train", "lvis_v1_minival",
                 "lvis_v1_val", "lvis_evaluation_mini_val", "lvis_evaluation_val", "vg_dt_train", "gqa_val"):
        assert name in DatasetCatalog.DATASETS, name


def test_coco_detection_entry_resolves_under_dataset_env(data_root):
    _touch(data_root, "coco/val2017", "coco/annotations/instances_val2017.json")
    entry = DatasetCatalog.get("coco_2017_val")
    assert entry["factory"] == "COCODataset"
    args = entry["args"]
    assert os.path.samefile(args["root"], data_root / "coco/val2017")
    assert os.path.samefile(args["ann_file"], data_root / "coco/annotations/instances_val2017.json")


def test_factories_chosen_from_the_name(data_root):
    _touch(data_root, "coco/train2017", "coco/annotations/instances_train2017.json",
           "flickr30k/flickr30k_images/val", "mdetr_annotations/final_flickr_separateGT_val.json",
           "coco/train2014", "gqa/images", "mdetr_annotations/final_mixed_train_no_coco.json",
           "Objects365/objects365_train_vgoiv6.cas2000.yaml")
    grounding = DatasetCatalog.get("coco_grounding_train")
    assert grounding["factory"] == "CocoGrounding"
    assert grounding["args"]["img_folder"] == os.path.join(os.environ["DATASET"], "coco/train2017")
    flickr = DatasetCatalog.get("flickr30k_val")
    assert flickr["factory"] == "FlickrDataset" and flickr["args"]["is_train"] is False
    mixed = DatasetCatalog.get("mixed_train_no_coco")
    assert mixed["factory"] == "MixedDataset"
    assert set(mixed["args"]) == {"img_folder_coco", "img_folder_vg", "ann_file"}
    o365 = DatasetCatalog.get("object365_dt_train")
    assert o365["factory"] == "CocoDetectionTSV" and o365["args"]["name"] == "object365_dt"
    assert o365["args"]["yaml_file"].endswith("Objects365/objects365_train_vgoiv6.cas2000.yaml")


def test_registered_lvis_minival_is_built_by_the_lvis_evaluator(data_root):
    _touch(data_root, "coco", "coco/annotations/lvis_v1_minival_inserted_image_name.json")
    task = cfg.clone()
    task.merge_from_file(str(FIXTURES / "official_configs/lvis/minival.yaml"))
    assert register_datasets(task, is_train=False) == ["lvis_evaluation_mini_val", "lvis_evaluation_val"]
    entry = DatasetCatalog.get("lvis_evaluation_mini_val")
    assert entry["factory"] == "LvisDetection"
    assert entry["args"]["img_folder"] == os.path.join(os.environ["DATASET"], "coco")


def test_register_with_suffix_makes_a_grounding_dataset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATASET", str(E2E))
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    task = cfg.clone()
    task.merge_from_file(str(E2E / "trees.yaml"))
    task.merge_from_list(["DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding"])
    assert register_datasets(task, is_train=True) == ["test_grounding"]
    assert register_datasets(task, is_train=False) == ["test"]
    entry = DatasetCatalog.get("test_grounding")
    assert entry["factory"] == "CocoGrounding"
    assert os.path.samefile(entry["args"]["ann_file"], E2E / "trees/annotations.json")
    assert os.path.samefile(entry["args"]["img_folder"], E2E / "trees/images")
    plain = DatasetCatalog.get("test")
    assert plain["factory"] == "COCODataset"
    assert os.path.samefile(plain["args"]["root"], E2E / "trees/images")


def test_set_adds_an_entry(data_root):
    DatasetCatalog.set("my_set", {"img_dir": "imgs", "ann_file": "a.json"})
    assert DatasetCatalog.DATASETS["my_set"] == {"img_dir": "imgs", "ann_file": "a.json"}
    with pytest.raises(KeyError):
        DatasetCatalog.get("not_a_dataset_name")


def test_try_to_find_search_order_and_errors(data_root, tmp_path):
    assert try_to_find("") == ""
    assert try_to_find("catalog://ImageNetPretrained/MSRA/R-50") == "catalog://ImageNetPretrained/MSRA/R-50"
    _touch(data_root, "x/y.json")
    assert try_to_find("x/y.json") == os.path.join(os.environ["DATASET"], "x/y.json")
    assert try_to_find("x/y.json", return_dir=True) == os.environ["DATASET"]
    # The working directory comes first.
    _touch(tmp_path / "work", "x/y.json")
    assert try_to_find("x/y.json") == os.path.join("./", "x/y.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        try_to_find("missing.json")


def test_model_catalog_imagenet_url():
    assert ModelCatalog.get("ImageNetPretrained/MSRA/R-50") == \
        "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
