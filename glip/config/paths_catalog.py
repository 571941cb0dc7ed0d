"""Catalog of named datasets: where their files live and which dataset class builds them.

``DatasetCatalog.get(name)`` returns ``{"factory": <class name as a string>, "args": {...}}``
with absolute paths; the data package maps the factory name to its class. Relative paths
are looked up by :func:`try_to_find` in ``./``, ``$DATASET``, ``./DATASET``, ``./OUTPUT``,
``./data`` and ``./MODEL`` (first hit wins), as the reference does. Task configs add
entries at run time through ``DATASETS.REGISTER`` (see :func:`register_datasets`).
"""
import logging
import os

logger = logging.getLogger(__name__)

DEFAULT_SEARCH_PATH = ("./DATASET", "./OUTPUT", "./data", "./MODEL")


def try_to_find(file, return_dir=False, search_path=DEFAULT_SEARCH_PATH):
    """Resolve a relative ``file`` against the data roots.

    Returns ``file`` unchanged when empty or a ``catalog://`` URL, else ``root/file`` (or
    ``root`` with ``return_dir=True``) for the first root in which it exists. Raises
    ``FileNotFoundError`` listing the roots searched when it exists nowhere.
    """
    if not file:
        return file
    if file.startswith("catalog://"):
        return file
    roots = ["./"]
    if "DATASET" in os.environ:
        roots.append(os.environ["DATASET"])
    roots += list(search_path)
    for root in roots:
        if os.path.exists(os.path.join(root, file)):
            return root if return_dir else os.path.join(root, file)
    raise FileNotFoundError("Cannot find {} in {}".format(file, roots))


def _coco_json(img_dir, ann_file, **extra):
    entry = {"img_dir": img_dir, "ann_file": ann_file}
    entry.update(extra)
    return entry


class DatasetCatalog:
    """Name -> attributes of the datasets used by the GLIP configs (mutable through :meth:`set`)."""

    DATASETS = {
        # gold grounding data (MDETR annotations)
        "mixed_train": {
            "coco_img_dir": "coco/train2014",
            "vg_img_dir": "gqa/images",
            "ann_file": "mdetr_annotations/final_mixed_train.json",
        },
        "mixed_train_no_coco": {
            "coco_img_dir": "coco/train2014",
            "vg_img_dir": "gqa/images",
            "ann_file": "mdetr_annotations/final_mixed_train_no_coco.json",
        },
        "flickr30k_train": {
            "img_folder": "flickr30k/flickr30k_images/train",
            "ann_file": "mdetr_annotations/final_flickr_separateGT_train.json",
            "is_train": True,
        },
        "flickr30k_val": {
            "img_folder": "flickr30k/flickr30k_images/val",
            "ann_file": "mdetr_annotations/final_flickr_separateGT_val.json",
            "is_train": False,
        },
        "flickr30k_test": {
            "img_folder": "flickr30k/flickr30k_images/test",
            "ann_file": "mdetr_annotations/final_flickr_separateGT_test.json",
            "is_train": False,
        },
        "refexp_all_val": _coco_json(
            "refcoco/train2014", "mdetr_annotations/final_refexp_val.json", is_train=False),
        "gqa_val": _coco_json("gqa/images", "mdetr_annotations/final_gqa_val.json", is_train=False),
        "phrasecut_train": _coco_json(
            "gqa/images", "mdetr_annotations/finetune_phrasecut_train.json", is_train=True),
        # detection data in TSV form, turned into grounding captions
        "coco_dt_train": {"dataset_file": "coco_dt", "yaml_path": "coco_tsv/coco_obj.yaml", "is_train": True},
        "COCO_odinw_train_8copy_dt_train": {
            "dataset_file": "coco_odinw_dt", "yaml_path": "coco_tsv/COCO_odinw_train_8copy.yaml", "is_train": True},
        "COCO_odinw_val_dt_train": {
            "dataset_file": "coco_odinw_dt", "yaml_path": "coco_tsv/COCO_odinw_val.yaml", "is_train": False},
        "lvisv1_dt_train": {"dataset_file": "lvisv1_dt", "yaml_path": "coco_tsv/LVIS_v1_train.yaml", "is_train": True},
        "LVIS_odinw_train_8copy_dt_train": {
            "dataset_file": "coco_odinw_dt", "yaml_path": "coco_tsv/LVIS_odinw_train_8copy.yaml", "is_train": True},
        "object365_dt_train": {
            "dataset_file": "object365_dt",
            "yaml_path": "Objects365/objects365_train_vgoiv6.cas2000.yaml",
            "is_train": True,
        },
        "object365_odinw_2copy_dt_train": {
            "dataset_file": "object365_odinw_dt",
            "yaml_path": "Objects365/objects365_train_odinw.cas2000_2copy.yaml",
            "is_train": True,
        },
        "objects365_odtsv_train": {
            "dataset_file": "objects365_odtsv", "yaml_path": "Objects365/train.cas2000.yaml", "is_train": True},
        "objects365_odtsv_val": {
            "dataset_file": "objects365_odtsv", "yaml_path": "Objects365/val.yaml", "is_train": False},
        "imagenetod_train_odinw_2copy_dt": {
            "dataset_file": "imagenetod_odinw_dt",
            "yaml_path": "imagenet_od/imagenetod_train_odinw_2copy.yaml",
            "is_train": True,
        },
        "oi_train_odinw_dt": {
            "dataset_file": "oi_odinw_dt",
            "yaml_path": "openimages_v5c/oi_train_odinw.cas.2000.yaml",
            "is_train": True,
        },
        "vg_dt_train": {
            "dataset_file": "vg_dt", "yaml_path": "visualgenome/train_vgoi6_clipped.yaml", "is_train": True},
        "vg_odinw_clipped_8copy_dt_train": {
            "dataset_file": "vg_odinw_clipped_8copy_dt",
            "yaml_path": "visualgenome/train_odinw_clipped_8copy.yaml",
            "is_train": True,
        },
        "vg_vgoi6_clipped_8copy_dt_train": {
            "dataset_file": "vg_vgoi6_clipped_8copy_dt",
            "yaml_path": "visualgenome/train_vgoi6_clipped_8copy.yaml",
            "is_train": True,
        },
        # COCO-format json
        "coco_grounding_train": _coco_json(
            "coco/train2017", "coco/annotations/instances_train2017.json", is_train=True),
        "lvis_grounding_train": _coco_json("coco", "coco/annotations/lvis_od_train.json"),
        "lvis_val": _coco_json("coco", "coco/annotations/lvis_od_val.json"),
        # LVIS evaluation (same files the official lvis/ task configs register)
        "lvis_evaluation_mini_val": _coco_json("coco", "coco/annotations/lvis_v1_minival_inserted_image_name.json"),
        "lvis_evaluation_val": _coco_json("coco", "coco/annotations/lvis_od_val.json"),
        "lvis_v1_minival": _coco_json("coco", "coco/annotations/lvis_v1_minival_inserted_image_name.json"),
        "lvis_v1_val": _coco_json("coco", "coco/annotations/lvis_od_val.json"),
        "coco_2017_train": _coco_json("coco/train2017", "coco/annotations/instances_train2017.json"),
        "coco_2017_val": _coco_json("coco/val2017", "coco/annotations/instances_val2017.json"),
        "coco_2017_test": _coco_json("coco/test2017", "coco/annotations/image_info_test-dev2017.json"),
        "coco_2014_train": _coco_json("coco/train2014", "coco/annotations/instances_train2014.json"),
        "coco_2014_val": _coco_json("coco/val2014", "coco/annotations/instances_val2014.json"),
        "coco_2014_minival": _coco_json("coco/val2014", "coco/annotations/instances_minival2014.json"),
    }

    @staticmethod
    def set(name, info):
        """Add or replace the entry ``name`` (used for ``DATASETS.REGISTER``)."""
        DatasetCatalog.DATASETS.update({name: dict(info)})

    @staticmethod
    def get(name):
        """Return ``{"factory": str, "args": dict}`` for ``name``; the factory is chosen from the name."""
        if name.endswith("_bg"):
            attrs = DatasetCatalog.DATASETS[name]
            root = try_to_find(attrs["ann_file"], return_dir=True)
            return dict(factory="Background", args=dict(
                root=os.path.join(root, attrs["img_dir"]), ann_file=os.path.join(root, attrs["ann_file"])))
        if "bing" in name.split("_"):
            attrs = DatasetCatalog.DATASETS["bing_caption_train"]
        elif name in DatasetCatalog.DATASETS:
            attrs = DatasetCatalog.DATASETS[name]
        else:
            raise KeyError("Dataset not available in the catalog: {}".format(name))

        if "voc" in name and "split" in attrs:
            root = try_to_find(attrs["data_dir"], return_dir=True)
            return dict(factory="PascalVOCDataset", args=dict(
                data_dir=os.path.join(root, attrs["data_dir"]), split=attrs["split"]))
        if "mixed" in name:
            return dict(factory="MixedDataset", args=dict(
                img_folder_coco=_locate(attrs["coco_img_dir"]),
                img_folder_vg=_locate(attrs["vg_img_dir"]),
                ann_file=_locate(attrs["ann_file"]),
            ))
        if "flickr" in name:
            return dict(factory="FlickrDataset", args=dict(
                img_folder=_locate(attrs["img_folder"]), ann_file=_locate(attrs["ann_file"]),
                is_train=attrs["is_train"]))
        for keyword, factory in (("refexp", "RefExpDataset"), ("gqa", "GQADataset"),
                                 ("phrasecut", "PhrasecutDetection")):
            if keyword in name:
                return dict(factory=factory, args=dict(
                    img_folder=_locate(attrs["img_dir"]), ann_file=_locate(attrs["ann_file"])))
        if "_caption" in name:
            root = try_to_find(attrs["yaml_path"], return_dir=True)
            yaml_name = attrs["yaml_name_no_coco"] if "no_coco" in name else attrs["yaml_name"]
            yaml_file = "{}.{}.yaml".format(yaml_name, name.split("_")[2])
            return dict(factory="CaptionTSV", args=dict(yaml_file=os.path.join(root, attrs["yaml_path"], yaml_file)))
        if "inferencecap" in name:
            return dict(factory="CaptionTSV", args=dict(yaml_file=try_to_find(attrs["yaml_path"])))
        if "pseudo_data" in name:
            return dict(factory="PseudoData", args=dict(yaml_file=try_to_find(attrs["yaml_path"])))
        if "_dt" in name:
            return dict(factory="CocoDetectionTSV", args=dict(
                name=attrs["dataset_file"], yaml_file=_locate(attrs["yaml_path"])))
        if "_odtsv" in name:
            return dict(factory="ODTSVDataset", args=dict(
                name=attrs["dataset_file"], yaml_file=_locate(attrs["yaml_path"])))
        if "_grounding" in name:
            return dict(factory="CocoGrounding", args=dict(
                img_folder=_locate(attrs["img_dir"]), ann_file=_locate(attrs["ann_file"])))
        if "lvis_evaluation" in name or name.startswith("lvis_v1_"):
            return dict(factory="LvisDetection", args=dict(
                img_folder=_locate(attrs["img_dir"]), ann_file=_locate(attrs["ann_file"])))
        # Plain COCO detection json: every attribute is a path under the annotation root.
        ann_root = try_to_find(attrs["ann_file"], return_dir=True)
        img_root = try_to_find(attrs["img_dir"], return_dir=True)
        args = dict(root=os.path.join(img_root, attrs["img_dir"]), ann_file=os.path.join(ann_root, attrs["ann_file"]))
        for key, value in attrs.items():
            args[key] = os.path.join(ann_root, value)
        return dict(factory="COCODataset", args=args)


def _locate(relative_path):
    """``root/relative_path`` for the first data root that holds it."""
    return os.path.join(try_to_find(relative_path, return_dir=True), relative_path)


def register_datasets(cfg, is_train):
    """Add every ``cfg.DATASETS.REGISTER`` entry to :class:`DatasetCatalog`.

    The registered name gets ``DATASETS.TRAIN_DATASETNAME_SUFFIX`` (``is_train``) or
    ``DATASETS.TEST_DATASETNAME_SUFFIX`` appended, so that e.g. ``test`` registered with
    the suffix ``_grounding`` is built by ``CocoGrounding``. Returns the registered names.
    """
    suffix = cfg.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else cfg.DATASETS.TEST_DATASETNAME_SUFFIX
    names = []
    for name, attrs in cfg.DATASETS.REGISTER.items():
        DatasetCatalog.set(name + suffix, dict(attrs))
        names.append(name + suffix)
    if names:
        logger.debug("Registered datasets %s", names)
    return names


class ModelCatalog:
    """Detectron-era ``catalog://`` URLs of ImageNet / COCO pre-trained models."""

    S3_C2_DETECTRON_URL = "https://dl.fbaipublicfiles.com/detectron"
    C2_IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "MSRA/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/20171220/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
        "FAIR/20171220/X-101-64x4d": "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
    }

    @staticmethod
    def get(name):
        """URL of ``ImageNetPretrained/<key>``; other catalog names are not supported."""
        if name.startswith("ImageNetPretrained/"):
            key = name[len("ImageNetPretrained/"):]
            return "/".join([ModelCatalog.S3_C2_DETECTRON_URL, ModelCatalog.C2_IMAGENET_MODELS[key]])
        raise RuntimeError("model not present in the catalog {}".format(name))
