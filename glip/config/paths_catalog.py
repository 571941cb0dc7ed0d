"""Catalog of named datasets: which dataset factory builds each one and where its files live.

An entry is a flat dict: ``factory`` (the name of a dataset factory registered in
``glip.data.datasets.registry``) plus the factory's catalog attributes, with paths relative to the data
roots (e.g. ``{"factory": "COCODataset", "img_dir": "coco/val2017", "ann_file": "coco/annotations/..."}``).
The data layer turns the attributes into constructor arguments and locates the paths with :func:`try_to_find`
in ``./``, ``$DATASET``, ``./DATASET``, ``./OUTPUT``, ``./data`` and ``./MODEL`` (first hit wins), as the
reference does.

Task configs add entries at run time through ``DATASETS.REGISTER`` (see :func:`register_datasets`): an entry
may name its factory (``factory: FlickrDataset``); without one its factory is the built-in entry's of the same
name, else :data:`SUFFIX_FACTORIES` of the dataset-name suffix (the reference's convention).
"""
import logging
import os
from typing import Dict, List

logger = logging.getLogger(__name__)

DEFAULT_SEARCH_PATH = ("./DATASET", "./OUTPUT", "./data", "./MODEL")

# The factory of a ``DATASETS.REGISTER`` entry without a ``factory`` key, by the suffix the run appends to the
# registered names (``DATASETS.TRAIN_DATASETNAME_SUFFIX`` when training, ``TEST_DATASETNAME_SUFFIX`` when
# testing). The reference reads COCO-format task data (ODinW, custom sets) as plain detection data
# (``COCODataset``, e.g. for evaluation) or, with the suffix ``_grounding``, as detection-as-grounding training
# data (``CocoGrounding``). Other suffixes need an explicit ``factory`` in the entry.
SUFFIX_FACTORIES: Dict[str, str] = {
    "": "COCODataset",
    "_grounding": "CocoGrounding",
}


def try_to_find(file, return_dir=False, search_path=DEFAULT_SEARCH_PATH):
    """Resolve a relative ``file`` against the data roots.

    Returns ``file`` unchanged when empty or a ``catalog://`` URL, the cached local copy of an ``hf://`` or
    ``http(s)://`` file (:func:`glip.utils.hub.resolve`), else ``root/file`` (or ``root`` with
    ``return_dir=True``) for the first root in which it exists. Raises ``FileNotFoundError`` listing the roots
    searched when it exists nowhere.
    """
    from glip.utils import hub

    if not file:
        return file
    if file.startswith("catalog://"):
        return file
    if hub.is_remote(file):
        path = hub.resolve(file)
        return os.path.dirname(path) if return_dir else path
    roots = ["./"]
    if "DATASET" in os.environ:
        roots.append(os.environ["DATASET"])
    roots += list(search_path)
    for root in roots:
        if os.path.exists(os.path.join(root, file)):
            return root if return_dir else os.path.join(root, file)
    raise FileNotFoundError("Cannot find {} in {}".format(file, roots))


def locate(relative_path: str) -> str:
    """``root/relative_path`` for the first data root that holds it (see :func:`try_to_find`)."""
    return os.path.join(try_to_find(relative_path, return_dir=True), relative_path)


def _coco(factory, img_dir, ann_file):
    return {"factory": factory, "img_dir": img_dir, "ann_file": ann_file}


def _tsv(factory, yaml_path, dataset_file=None):
    entry = {"factory": factory, "yaml_path": yaml_path}
    if dataset_file is not None:
        entry["dataset_file"] = dataset_file
    return entry


def _flickr(split):
    return {"factory": "FlickrDataset", "img_folder": "flickr30k/flickr30k_images/" + split,
            "ann_file": "mdetr_annotations/final_flickr_separateGT_{}.json".format(split), "is_train": split == "train"}


def _mixed(ann_file):
    return {"factory": "MixedDataset", "coco_img_dir": "coco/train2014", "vg_img_dir": "gqa/images",
            "ann_file": ann_file}


_LVIS_MINIVAL = "coco/annotations/lvis_v1_minival_inserted_image_name.json"
_LVIS_VAL = "coco/annotations/lvis_od_val.json"

BUILTIN_DATASETS: Dict[str, dict] = {
    # gold grounding data (MDETR annotations)
    "mixed_train": _mixed("mdetr_annotations/final_mixed_train.json"),
    "mixed_train_no_coco": _mixed("mdetr_annotations/final_mixed_train_no_coco.json"),
    "flickr30k_train": _flickr("train"),
    "flickr30k_val": _flickr("val"),
    "flickr30k_test": _flickr("test"),
    # (factories of the reference that are not implemented here)
    "refexp_all_val": dict(_coco("RefExpDataset", "refcoco/train2014", "mdetr_annotations/final_refexp_val.json"),
                           is_train=False),
    "gqa_val": dict(_coco("GQADataset", "gqa/images", "mdetr_annotations/final_gqa_val.json"), is_train=False),
    "phrasecut_train": dict(
        _coco("PhrasecutDetection", "gqa/images", "mdetr_annotations/finetune_phrasecut_train.json"), is_train=True),
    # pseudo-labelled caption data (the reference's names: <yaml_path>/<yaml_name>.train.yaml)
    "bing_caption_train": {"factory": "CaptionTSV",
                           "yaml_file": "BingData/predict_yaml/dreamstime_com_dyhead_objvg_e39.train.yaml"},
    "bing_caption_train_no_coco": {
        "factory": "CaptionTSV",
        "yaml_file": "BingData/predict_yaml/dreamstime_com_Detection_Pretrain_NoCOCO_Packed125.train.yaml"},
    # detection data in TSV form, turned into grounding captions
    "coco_dt_train": _tsv("CocoDetectionTSV", "coco_tsv/coco_obj.yaml", "coco_dt"),
    "COCO_odinw_train_8copy_dt_train": _tsv(
        "CocoDetectionTSV", "coco_tsv/COCO_odinw_train_8copy.yaml", "coco_odinw_dt"),
    "COCO_odinw_val_dt_train": _tsv("CocoDetectionTSV", "coco_tsv/COCO_odinw_val.yaml", "coco_odinw_dt"),
    "lvisv1_dt_train": _tsv("CocoDetectionTSV", "coco_tsv/LVIS_v1_train.yaml", "lvisv1_dt"),
    "LVIS_odinw_train_8copy_dt_train": _tsv(
        "CocoDetectionTSV", "coco_tsv/LVIS_odinw_train_8copy.yaml", "coco_odinw_dt"),
    "object365_dt_train": _tsv("CocoDetectionTSV", "Objects365/objects365_train_vgoiv6.cas2000.yaml", "object365_dt"),
    "object365_odinw_2copy_dt_train": _tsv(
        "CocoDetectionTSV", "Objects365/objects365_train_odinw.cas2000_2copy.yaml", "object365_odinw_dt"),
    "imagenetod_train_odinw_2copy_dt": _tsv(
        "CocoDetectionTSV", "imagenet_od/imagenetod_train_odinw_2copy.yaml", "imagenetod_odinw_dt"),
    "oi_train_odinw_dt": _tsv("CocoDetectionTSV", "openimages_v5c/oi_train_odinw.cas.2000.yaml", "oi_odinw_dt"),
    "vg_dt_train": _tsv("CocoDetectionTSV", "visualgenome/train_vgoi6_clipped.yaml", "vg_dt"),
    "vg_odinw_clipped_8copy_dt_train": _tsv(
        "CocoDetectionTSV", "visualgenome/train_odinw_clipped_8copy.yaml", "vg_odinw_clipped_8copy_dt"),
    "vg_vgoi6_clipped_8copy_dt_train": _tsv(
        "CocoDetectionTSV", "visualgenome/train_vgoi6_clipped_8copy.yaml", "vg_vgoi6_clipped_8copy_dt"),
    # detection-only TSV
    "objects365_odtsv_train": _tsv("ODTSVDataset", "Objects365/train.cas2000.yaml"),
    "objects365_odtsv_val": _tsv("ODTSVDataset", "Objects365/val.yaml"),
    # COCO-format json read as grounding data
    "coco_grounding_train": _coco("CocoGrounding", "coco/train2017", "coco/annotations/instances_train2017.json"),
    "lvis_grounding_train": _coco("CocoGrounding", "coco", "coco/annotations/lvis_od_train.json"),
    # LVIS evaluation (the same files the official lvis/ task configs register)
    "lvis_evaluation_mini_val": _coco("LvisDetection", "coco", _LVIS_MINIVAL),
    "lvis_evaluation_val": _coco("LvisDetection", "coco", _LVIS_VAL),
    "lvis_v1_minival": _coco("LvisDetection", "coco", _LVIS_MINIVAL),
    "lvis_v1_val": _coco("LvisDetection", "coco", _LVIS_VAL),
    # COCO-format detection json
    "lvis_val": _coco("COCODataset", "coco", _LVIS_VAL),
    "coco_2017_train": _coco("COCODataset", "coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": _coco("COCODataset", "coco/val2017", "coco/annotations/instances_val2017.json"),
    "coco_2017_test": _coco("COCODataset", "coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
    "coco_2014_train": _coco("COCODataset", "coco/train2014", "coco/annotations/instances_train2014.json"),
    "coco_2014_val": _coco("COCODataset", "coco/val2014", "coco/annotations/instances_val2014.json"),
    "coco_2014_minival": _coco("COCODataset", "coco/val2014", "coco/annotations/instances_minival2014.json"),
}


class DatasetCatalog:
    """Name -> entry (``factory`` + attributes) of the datasets the configs use; mutable through :meth:`set`."""

    DATASETS: Dict[str, dict] = {name: dict(entry) for name, entry in BUILTIN_DATASETS.items()}

    @staticmethod
    def set(name: str, info) -> None:
        """Add or replace the entry ``name``; ``info`` must name its ``factory``."""
        info = dict(info)
        if not info.get("factory"):
            raise ValueError("catalog entry {!r} names no factory: {}".format(name, info))
        DatasetCatalog.DATASETS[name] = info

    @staticmethod
    def get(name: str) -> dict:
        """A copy of the entry ``name``: ``{"factory": str, <attribute>: <value>, ...}``."""
        if name not in DatasetCatalog.DATASETS:
            raise KeyError("Dataset not available in the catalog: {} (register it with DATASETS.REGISTER)"
                           .format(name))
        return dict(DatasetCatalog.DATASETS[name])


def registered_factory(name: str, attrs, suffix: str) -> str:
    """The factory of the ``DATASETS.REGISTER`` entry ``attrs`` registered as ``name`` (suffix included).

    In order: the entry's own ``factory``; the factory of the built-in entry called ``name`` (the official LVIS
    task configs re-register ``lvis_evaluation_*``); :data:`SUFFIX_FACTORIES` of ``suffix``.
    """
    if attrs.get("factory"):
        return attrs["factory"]
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]["factory"]
    if suffix in SUFFIX_FACTORIES:
        return SUFFIX_FACTORIES[suffix]
    raise ValueError("DATASETS.REGISTER entry {!r} has no 'factory' and the dataset-name suffix {!r} has no default "
                     "factory (suffix -> factory: {}); add 'factory: <name>' to the entry".format(
                         name, suffix, SUFFIX_FACTORIES))


def register_datasets(cfg, is_train: bool) -> List[str]:
    """Add every ``cfg.DATASETS.REGISTER`` entry to :class:`DatasetCatalog`; returns the registered names.

    The registered name gets ``DATASETS.TRAIN_DATASETNAME_SUFFIX`` (``is_train``) or
    ``DATASETS.TEST_DATASETNAME_SUFFIX`` appended, e.g. ODinW's ``train`` becomes ``train_grounding``; its factory
    is chosen by :func:`registered_factory`.
    """
    suffix = cfg.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else cfg.DATASETS.TEST_DATASETNAME_SUFFIX
    names = []
    for name, attrs in cfg.DATASETS.REGISTER.items():
        full_name = name + suffix
        entry = dict(attrs)
        entry["factory"] = registered_factory(full_name, entry, suffix)
        DatasetCatalog.set(full_name, entry)
        names.append(full_name)
    if names:
        logger.debug("Registered datasets %s", names)
    return names
