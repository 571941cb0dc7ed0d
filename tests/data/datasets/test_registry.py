"""Dataset factories by name: every built-in catalog name resolves to the class and arguments it had, unknown and
unimplemented factories fail by name, catalog attributes are checked, and a new format is one registration."""
import inspect
import os

import pytest
from helpers import REFERENCE

from glip.config.paths_catalog import BUILTIN_DATASETS, DatasetCatalog
from glip.data import datasets as D
from glip.data.datasets.registry import (
    DATASET_FACTORIES,
    NOT_IMPLEMENTED,
    factory_of,
    get_factory,
    register_dataset,
    resolve_dataset,
)

# What main (eafe511) built for each built-in name: the factory and the constructor arguments that reached it
# (DatasetCatalog.get's "args", paths relative to the data root, minus those the constructors swallowed through
# **kwargs: COCODataset's "img_dir" and ODTSVDataset's "name").
BEFORE = {
    "COCO_odinw_train_8copy_dt_train": ("CocoDetectionTSV", {
        "name": "coco_odinw_dt",
        "yaml_file": "coco_tsv/COCO_odinw_train_8copy.yaml",
    }),
    "COCO_odinw_val_dt_train": ("CocoDetectionTSV", {
        "name": "coco_odinw_dt",
        "yaml_file": "coco_tsv/COCO_odinw_val.yaml",
    }),
    "LVIS_odinw_train_8copy_dt_train": ("CocoDetectionTSV", {
        "name": "coco_odinw_dt",
        "yaml_file": "coco_tsv/LVIS_odinw_train_8copy.yaml",
    }),
    "coco_2014_minival": ("COCODataset", {
        "ann_file": "coco/annotations/instances_minival2014.json",
        "root": "coco/val2014",
    }),
    "coco_2014_train": ("COCODataset", {
        "ann_file": "coco/annotations/instances_train2014.json",
        "root": "coco/train2014",
    }),
    "coco_2014_val": ("COCODataset", {"ann_file": "coco/annotations/instances_val2014.json", "root": "coco/val2014"}),
    "coco_2017_test": ("COCODataset", {
        "ann_file": "coco/annotations/image_info_test-dev2017.json",
        "root": "coco/test2017",
    }),
    "coco_2017_train": ("COCODataset", {
        "ann_file": "coco/annotations/instances_train2017.json",
        "root": "coco/train2017",
    }),
    "coco_2017_val": ("COCODataset", {"ann_file": "coco/annotations/instances_val2017.json", "root": "coco/val2017"}),
    "coco_dt_train": ("CocoDetectionTSV", {"name": "coco_dt", "yaml_file": "coco_tsv/coco_obj.yaml"}),
    "coco_grounding_train": ("CocoGrounding", {
        "ann_file": "coco/annotations/instances_train2017.json",
        "img_folder": "coco/train2017",
    }),
    "flickr30k_test": ("FlickrDataset", {
        "ann_file": "mdetr_annotations/final_flickr_separateGT_test.json",
        "img_folder": "flickr30k/flickr30k_images/test",
        "is_train": False,
    }),
    "flickr30k_train": ("FlickrDataset", {
        "ann_file": "mdetr_annotations/final_flickr_separateGT_train.json",
        "img_folder": "flickr30k/flickr30k_images/train",
        "is_train": True,
    }),
    "flickr30k_val": ("FlickrDataset", {
        "ann_file": "mdetr_annotations/final_flickr_separateGT_val.json",
        "img_folder": "flickr30k/flickr30k_images/val",
        "is_train": False,
    }),
    "gqa_val": ("GQADataset", {"ann_file": "mdetr_annotations/final_gqa_val.json", "img_folder": "gqa/images"}),
    "imagenetod_train_odinw_2copy_dt": ("CocoDetectionTSV", {
        "name": "imagenetod_odinw_dt",
        "yaml_file": "imagenet_od/imagenetod_train_odinw_2copy.yaml",
    }),
    "lvis_evaluation_mini_val": ("LvisDetection", {
        "ann_file": "coco/annotations/lvis_v1_minival_inserted_image_name.json",
        "img_folder": "coco",
    }),
    "lvis_evaluation_val": ("LvisDetection", {"ann_file": "coco/annotations/lvis_od_val.json", "img_folder": "coco"}),
    "lvis_grounding_train": ("CocoGrounding", {
        "ann_file": "coco/annotations/lvis_od_train.json",
        "img_folder": "coco",
    }),
    "lvis_v1_minival": ("LvisDetection", {
        "ann_file": "coco/annotations/lvis_v1_minival_inserted_image_name.json",
        "img_folder": "coco",
    }),
    "lvis_v1_val": ("LvisDetection", {"ann_file": "coco/annotations/lvis_od_val.json", "img_folder": "coco"}),
    "lvis_val": ("COCODataset", {"ann_file": "coco/annotations/lvis_od_val.json", "root": "coco"}),
    "lvisv1_dt_train": ("CocoDetectionTSV", {"name": "lvisv1_dt", "yaml_file": "coco_tsv/LVIS_v1_train.yaml"}),
    "mixed_train": ("MixedDataset", {
        "ann_file": "mdetr_annotations/final_mixed_train.json",
        "img_folder_coco": "coco/train2014",
        "img_folder_vg": "gqa/images",
    }),
    "bing_caption_train": ("CaptionTSV", {
        "yaml_file": "BingData/predict_yaml/dreamstime_com_dyhead_objvg_e39.train.yaml",
    }),
    "bing_caption_train_no_coco": ("CaptionTSV", {
        "yaml_file": "BingData/predict_yaml/dreamstime_com_Detection_Pretrain_NoCOCO_Packed125.train.yaml",
    }),
    "mixed_train_no_coco": ("MixedDataset", {
        "ann_file": "mdetr_annotations/final_mixed_train_no_coco.json",
        "img_folder_coco": "coco/train2014",
        "img_folder_vg": "gqa/images",
    }),
    "object365_dt_train": ("CocoDetectionTSV", {
        "name": "object365_dt",
        "yaml_file": "Objects365/objects365_train_vgoiv6.cas2000.yaml",
    }),
    "object365_odinw_2copy_dt_train": ("CocoDetectionTSV", {
        "name": "object365_odinw_dt",
        "yaml_file": "Objects365/objects365_train_odinw.cas2000_2copy.yaml",
    }),
    "objects365_odtsv_train": ("ODTSVDataset", {"yaml_file": "Objects365/train.cas2000.yaml"}),
    "objects365_odtsv_val": ("ODTSVDataset", {"yaml_file": "Objects365/val.yaml"}),
    "oi_train_odinw_dt": ("CocoDetectionTSV", {
        "name": "oi_odinw_dt",
        "yaml_file": "openimages_v5c/oi_train_odinw.cas.2000.yaml",
    }),
    "phrasecut_train": ("PhrasecutDetection", {
        "ann_file": "mdetr_annotations/finetune_phrasecut_train.json",
        "img_folder": "gqa/images",
    }),
    "refexp_all_val": ("RefExpDataset", {
        "ann_file": "mdetr_annotations/final_refexp_val.json",
        "img_folder": "refcoco/train2014",
    }),
    "vg_dt_train": ("CocoDetectionTSV", {"name": "vg_dt", "yaml_file": "visualgenome/train_vgoi6_clipped.yaml"}),
    "vg_odinw_clipped_8copy_dt_train": ("CocoDetectionTSV", {
        "name": "vg_odinw_clipped_8copy_dt",
        "yaml_file": "visualgenome/train_odinw_clipped_8copy.yaml",
    }),
    "vg_vgoi6_clipped_8copy_dt_train": ("CocoDetectionTSV", {
        "name": "vg_vgoi6_clipped_8copy_dt",
        "yaml_file": "visualgenome/train_vgoi6_clipped_8copy.yaml",
    }),
}
PATH_ARGS = ("ann_file", "img_folder", "img_folder_coco", "img_folder_vg", "root", "yaml_file")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """Every file and folder of BEFORE under a $DATASET root; an empty working directory; catalog restored."""
    root, work = tmp_path / "datasets", tmp_path / "work"
    work.mkdir()
    for _, args in BEFORE.values():
        for key in PATH_ARGS:
            if key in args:
                path = root / args[key]
                if path.suffix in (".json", ".yaml"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}")
                else:
                    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("DATASET", str(root))
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    return root


def test_every_builtin_name_resolves_to_the_class_and_arguments_it_had(data_root):
    assert set(BEFORE) == set(BUILTIN_DATASETS)
    for name, (factory_name, args) in BEFORE.items():
        if factory_name in NOT_IMPLEMENTED:
            with pytest.raises(NotImplementedError, match="{} \\(for {}\\) is not implemented".format(
                    factory_name, name)):
                resolve_dataset(name, DatasetCatalog)
            continue
        factory, got = resolve_dataset(name, DatasetCatalog)
        assert factory.name == factory_name and factory.cls is getattr(D, factory_name), name
        expected = {k: os.path.join(str(data_root), v) if k in PATH_ARGS else v for k, v in args.items()}
        assert got == expected, name


def test_registered_factories_take_exactly_their_own_arguments():
    assert set(DATASET_FACTORIES) == {"COCODataset", "CocoGrounding", "LvisDetection", "ModulatedDataset",
                                      "FlickrDataset", "MixedDataset", "ODTSVDataset", "CocoDetectionTSV",
                                      "Object365DetectionTSV", "CaptionTSV", "PseudoData"}
    for name, factory in DATASET_FACTORIES.items():
        kinds = {p.kind for p in inspect.signature(factory.cls).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, name
        assert set(factory.paths) | set(factory.values) <= factory.parameters, name
    assert not set(DATASET_FACTORIES) & set(NOT_IMPLEMENTED)


def test_a_misspelt_constructor_argument_raises_naming_it():
    with pytest.raises(TypeError, match="separation_token"):
        D.CocoGrounding("imgs", "ann.json", separation_token=". ")
    with pytest.raises(TypeError, match="max_boxes"):
        D.COCODataset("ann.json", "imgs", max_boxes=3)


def test_unknown_and_unimplemented_factories_fail_by_name():
    with pytest.raises(ValueError, match="'CocoGroundng' for dataset 'train_grounding'.*'CocoGrounding'"):
        get_factory("CocoGroundng", "train_grounding")
    for name in ("PascalVOCDataset", "RefExpDataset", "GQADataset", "PhrasecutDetection", "Background"):
        with pytest.raises(NotImplementedError, match="dataset factory {} \\(for my_set\\) is not implemented"
                           .format(name)):
            get_factory(name, "my_set")


def test_catalog_entry_attributes_are_checked(monkeypatch):
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    DatasetCatalog.set("typo", {"factory": "COCODataset", "img_dir": "x", "ann_fle": "a.json"})
    assert factory_of("typo", DatasetCatalog).name == "COCODataset"  # the factory resolves without files
    with pytest.raises(ValueError, match=r"'typo' of factory COCODataset: missing attributes \['ann_file'\] "
                                         r"unknown attributes \['ann_fle'\]"):
        resolve_dataset("typo", DatasetCatalog)
    DatasetCatalog.set("flickr_like", {"factory": "FlickrDataset", "img_folder": "x", "ann_file": "a.json"})
    with pytest.raises(ValueError, match=r"missing attributes \['is_train'\]"):
        resolve_dataset("flickr_like", DatasetCatalog)


def test_a_new_format_is_one_registration(monkeypatch, tmp_path):
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    monkeypatch.setattr("glip.data.datasets.registry.DATASET_FACTORIES", dict(DATASET_FACTORIES))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lines.txt").write_text("a\nb\nc\n")

    @register_dataset("LinesDataset", paths={"path": "file"}, values={"upper": "upper"})
    class LinesDataset:
        def __init__(self, path: str, upper: bool = False, transforms=None):
            with open(path) as f:
                self.lines = [line.strip().upper() if upper else line.strip() for line in f]

    DatasetCatalog.set("my_lines", {"factory": "LinesDataset", "file": "lines.txt", "upper": True})
    factory, args = resolve_dataset("my_lines", DatasetCatalog)
    assert factory.cls is LinesDataset and args == {"path": os.path.join("./", "lines.txt"), "upper": True}
    assert factory.cls(**args).lines == ["A", "B", "C"]
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("LinesDataset", paths={"path": "file"})(type("Other", (LinesDataset,), {}))
    with pytest.raises(TypeError, match=r"does not take the catalog arguments \['folder'\]"):
        register_dataset("Broken", paths={"folder": "img_dir"})(LinesDataset)


def test_registered_trees_task_resolves_under_the_data_root(monkeypatch, tmp_path):
    e2e = REFERENCE / "end_to_end"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATASET", str(e2e))
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    DatasetCatalog.set("test_grounding", {"factory": "CocoGrounding", "img_dir": "trees/images",
                                          "ann_file": "trees/annotations.json"})
    factory, args = resolve_dataset("test_grounding", DatasetCatalog)
    assert factory.cls is D.CocoGrounding
    assert os.path.samefile(args["img_folder"], e2e / "trees/images")
    assert os.path.samefile(args["ann_file"], e2e / "trees/annotations.json")
