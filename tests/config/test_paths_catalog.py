"""DatasetCatalog: entries naming their factory, DATASETS.REGISTER (explicit factory, built-in name, suffix
table), path lookup under $DATASET."""
import os
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES, REFERENCE

from glip.config import CfgNode, cfg
from glip.config.paths_catalog import (
    BUILTIN_DATASETS,
    SUFFIX_FACTORIES,
    DatasetCatalog,
    locate,
    register_datasets,
    try_to_find,
)

E2E = REFERENCE / "end_to_end"
REPO = Path(__file__).resolve().parents[2]

# The factory the catalog gave each built-in name before factories were named in the entries (read off
# DatasetCatalog.get of main at eafe511, whose substring rules "mixed", "flickr", "refexp", "gqa", "phrasecut",
# "_dt", "_odtsv", "_grounding", "lvis_evaluation" / "lvis_v1_" were tried in that order, else COCODataset).
FACTORY_BEFORE = {
    "mixed_train": "MixedDataset", "mixed_train_no_coco": "MixedDataset",
    # added with the caption data (issue 16): the reference's "_caption" rule
    "bing_caption_train": "CaptionTSV", "bing_caption_train_no_coco": "CaptionTSV",
    "flickr30k_train": "FlickrDataset", "flickr30k_val": "FlickrDataset", "flickr30k_test": "FlickrDataset",
    "refexp_all_val": "RefExpDataset", "gqa_val": "GQADataset", "phrasecut_train": "PhrasecutDetection",
    "coco_dt_train": "CocoDetectionTSV", "COCO_odinw_train_8copy_dt_train": "CocoDetectionTSV",
    "COCO_odinw_val_dt_train": "CocoDetectionTSV", "lvisv1_dt_train": "CocoDetectionTSV",
    "LVIS_odinw_train_8copy_dt_train": "CocoDetectionTSV", "object365_dt_train": "CocoDetectionTSV",
    "object365_odinw_2copy_dt_train": "CocoDetectionTSV", "imagenetod_train_odinw_2copy_dt": "CocoDetectionTSV",
    "oi_train_odinw_dt": "CocoDetectionTSV", "vg_dt_train": "CocoDetectionTSV",
    "vg_odinw_clipped_8copy_dt_train": "CocoDetectionTSV", "vg_vgoi6_clipped_8copy_dt_train": "CocoDetectionTSV",
    "objects365_odtsv_train": "ODTSVDataset", "objects365_odtsv_val": "ODTSVDataset",
    "coco_grounding_train": "CocoGrounding", "lvis_grounding_train": "CocoGrounding",
    "lvis_evaluation_mini_val": "LvisDetection", "lvis_evaluation_val": "LvisDetection",
    "lvis_v1_minival": "LvisDetection", "lvis_v1_val": "LvisDetection",
    "lvis_val": "COCODataset", "coco_2017_train": "COCODataset", "coco_2017_val": "COCODataset",
    "coco_2017_test": "COCODataset", "coco_2014_train": "COCODataset", "coco_2014_val": "COCODataset",
    "coco_2014_minival": "COCODataset",
}


@pytest.fixture
def catalog(monkeypatch):
    """The catalog's entries are restored after the test."""
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    return DatasetCatalog


@pytest.fixture
def data_root(tmp_path, monkeypatch, catalog):
    """An empty working directory and a $DATASET root."""
    work, root = tmp_path / "work", tmp_path / "datasets"
    work.mkdir()
    root.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DATASET", str(root))
    return root


def _touch(root, *relpaths):
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".json", ".yaml")):
            path.write_text("{}")
        else:
            path.mkdir(exist_ok=True)


def _task(path, **opts):
    task = cfg.clone()
    task.merge_from_file(str(path))
    task.merge_from_list([x for kv in opts.items() for x in kv])
    return task


def test_every_builtin_entry_names_the_factory_it_had():
    assert set(BUILTIN_DATASETS) == set(FACTORY_BEFORE)
    for name, entry in BUILTIN_DATASETS.items():
        assert entry["factory"] == FACTORY_BEFORE[name], name
        assert DatasetCatalog.get(name) == entry


def test_get_returns_a_copy_and_unknown_names_fail(catalog):
    entry = catalog.get("coco_2017_val")
    assert entry == {"factory": "COCODataset", "img_dir": "coco/val2017",
                     "ann_file": "coco/annotations/instances_val2017.json"}
    entry["img_dir"] = "elsewhere"
    assert catalog.get("coco_2017_val")["img_dir"] == "coco/val2017"
    with pytest.raises(KeyError, match="not_a_dataset_name"):
        catalog.get("not_a_dataset_name")


def test_set_adds_an_entry_that_names_its_factory(catalog):
    catalog.set("my_set", {"factory": "COCODataset", "img_dir": "imgs", "ann_file": "a.json"})
    assert catalog.get("my_set") == {"factory": "COCODataset", "img_dir": "imgs", "ann_file": "a.json"}
    with pytest.raises(ValueError, match="names no factory"):
        catalog.set("other", {"img_dir": "imgs", "ann_file": "a.json"})


def test_registered_lvis_minival_keeps_the_builtin_lvis_factory(catalog):
    task = _task(FIXTURES / "official_configs/lvis/minival.yaml")
    assert register_datasets(task, is_train=False) == ["lvis_evaluation_mini_val", "lvis_evaluation_val"]
    assert catalog.get("lvis_evaluation_mini_val") == {
        "factory": "LvisDetection", "img_dir": "coco",
        "ann_file": "coco/annotations/lvis_v1_minival_inserted_image_name.json"}
    # With the grounding suffix the registered name is no built-in one: the suffix table decides.
    grounding = _task(FIXTURES / "official_configs/lvis/minival.yaml",
                      **{"DATASETS.TRAIN_DATASETNAME_SUFFIX": "_grounding"})
    register_datasets(grounding, is_train=True)
    assert catalog.get("lvis_evaluation_mini_val_grounding")["factory"] == "CocoGrounding"


def test_register_suffix_chooses_the_factory(catalog):
    task = _task(E2E / "trees.yaml", **{"DATASETS.TRAIN_DATASETNAME_SUFFIX": "_grounding"})
    assert register_datasets(task, is_train=True) == ["test_grounding"]
    assert register_datasets(task, is_train=False) == ["test"]
    assert catalog.get("test_grounding") == {"factory": "CocoGrounding", "img_dir": "trees/images",
                                             "ann_file": "trees/annotations.json"}
    assert catalog.get("test")["factory"] == "COCODataset"
    assert SUFFIX_FACTORIES == {"": "COCODataset", "_grounding": "CocoGrounding"}


def test_register_entry_with_explicit_factory_overrides_the_suffix(catalog):
    task = _task(E2E / "trees.yaml", **{"DATASETS.TRAIN_DATASETNAME_SUFFIX": "_grounding"})
    task.DATASETS.REGISTER["captions"] = type(task)(
        {"factory": "FlickrDataset", "img_folder": "x/images", "ann_file": "x/grounding.json", "is_train": True})
    assert register_datasets(task, is_train=True) == ["test_grounding", "captions_grounding"]
    assert catalog.get("captions_grounding") == {"factory": "FlickrDataset", "img_folder": "x/images",
                                                 "ann_file": "x/grounding.json", "is_train": True}


def test_register_with_an_unknown_suffix_needs_a_factory(catalog):
    task = _task(E2E / "trees.yaml", **{"DATASETS.TRAIN_DATASETNAME_SUFFIX": "_odd"})
    with pytest.raises(ValueError, match="'test_odd'.*'_odd'.*_grounding.*factory"):
        register_datasets(task, is_train=True)


def _official_registers():
    """``{yaml file: its DATASETS.REGISTER}`` of the official task configs and the reference's end-to-end tasks."""
    registers = {}
    for folder in (REPO / "configs", FIXTURES / "official_configs", REFERENCE):
        for path in sorted(folder.rglob("*.yaml")):
            register = ((yaml.safe_load(path.read_text()) or {}).get("DATASETS") or {}).get("REGISTER")
            if register and "quickstart" not in path.parts:
                registers[path] = register
    return registers


def test_official_task_entries_resolve_as_before(catalog):
    """Every REGISTER entry of the official task configs (and the reference's end-to-end tasks) gets the factory
    main's substring rules gave it, with either suffix: LvisDetection for the LVIS names without suffix,
    else COCODataset without suffix and CocoGrounding with ``_grounding``."""
    registers = _official_registers()
    assert len(registers) > 100
    for path, register in registers.items():
        for suffix in ("", "_grounding"):
            task = CfgNode({"DATASETS": {"REGISTER": register, "TEST_DATASETNAME_SUFFIX": suffix}})
            for name in register_datasets(task, is_train=False):
                lvis = name in ("lvis_evaluation_mini_val", "lvis_evaluation_val")
                expected = "LvisDetection" if lvis else SUFFIX_FACTORIES[suffix]
                assert catalog.get(name)["factory"] == expected, (path, name)


def test_locate_and_try_to_find_search_order_and_errors(data_root, tmp_path):
    assert try_to_find("") == ""
    assert try_to_find("catalog://ImageNetPretrained/MSRA/R-50") == "catalog://ImageNetPretrained/MSRA/R-50"
    _touch(data_root, "x/y.json")
    assert try_to_find("x/y.json") == os.path.join(os.environ["DATASET"], "x/y.json")
    assert try_to_find("x/y.json", return_dir=True) == os.environ["DATASET"]
    assert locate("x/y.json") == os.path.join(os.environ["DATASET"], "x/y.json")
    # The working directory comes first.
    _touch(tmp_path / "work", "x/y.json")
    assert try_to_find("x/y.json") == os.path.join("./", "x/y.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        try_to_find("missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        locate("missing.json")
