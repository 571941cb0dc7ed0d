"""Data loaders from the config: datasets by catalog name, transforms, samplers and the batch collator.

``make_data_loader(cfg, is_train, is_distributed, start_iter)`` follows the reference: training returns ONE loader
over the concatenation of ``DATASETS.TRAIN`` (iteration-based, ``SOLVER.MAX_ITER`` batches, or
``SOLVER.MAX_EPOCH`` epochs which also sets ``SOLVER.MAX_ITER`` / ``SOLVER.DATASET_LENGTH`` in ``cfg``); testing
returns a list with one sequential loader per ``DATASETS.TEST`` entry.
"""
import json
import logging
from typing import List, Optional

import torch

from glip.data import datasets as D
from glip.data.collate import BatchCollator, BBoxAugCollator
from glip.data.datasets.coco import parse_override_category
from glip.data.datasets.concat import ConcatDataset, RepeatedDataset
from glip.data.positive_map import load_tokenizer
from glip.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    aspect_ratio_groups,
)
from glip.data.transforms import build_transforms

logger = logging.getLogger(__name__)

GROUNDING_FACTORIES = ("CocoGrounding", "CocoDetectionTSV", "Object365DetectionTSV", "MixedDataset",
                       "FlickrDataset", "ModulatedDataset")
TSV_FACTORIES = ("ODTSVDataset", "CocoDetectionTSV", "Object365DetectionTSV")

_COPY_KEYS = {
    "flickr30k_train": "FLICKR_COPY",
    "mixed_train": "MIXED_COPY",
    "mixed_train_no_coco": "MIXED_COPY",
    "COCO_odinw_train_8copy_dt_train": "COCO_COPY",
    "LVIS_odinw_train_8copy_dt_train": "LVIS_COPY",
    "object365_odinw_2copy_dt_train": "OBJECT365_COPY",
    "vg_odinw_clipped_8copy_dt_train": "VG_COPY",
    "vg_vgoi6_clipped_8copy_dt_train": "VG_COPY",
    "imagenetod_train_odinw_2copy_dt": "IN_COPY",
    "oi_train_odinw_dt": "OI_COPY",
}


def _maybe_json(value):
    return json.loads(value) if isinstance(value, str) else value


def dataset_extra_args(cfg, is_train: bool, tokenizer=None) -> dict:
    """Keyword arguments every dataset of this run receives (the reference's ``extra_args``)."""
    d = cfg.DATASETS
    args = {}
    if is_train:
        if d.USE_CROWD:
            args["ignore_crowd"] = False
        if d.MAX_BOX > 0:
            args["max_box"] = d.MAX_BOX
        if d.FEW_SHOT > 0:
            args["few_shot"] = d.FEW_SHOT
        if d.SHUFFLE_SEED != 0:
            args["shuffle_seed"] = d.SHUFFLE_SEED
        if d.RANDOM_SAMPLE_NEG > 0:
            args["random_sample_negative"] = d.RANDOM_SAMPLE_NEG
        if d.ADD_DET_PROMPT:
            args["add_detection_prompt"] = True
        if d.DISABLE_SHUFFLE:
            args["disable_shuffle"] = True
        if len(d.CONTROL_PROB) == 4:
            args["control_probabilities"] = tuple(d.CONTROL_PROB)
        if d.DISABLE_CLIP_TO_IMAGE:
            args["disable_clip_to_image"] = True
        if d.NO_MINUS_ONE_FOR_ONE_HOT:
            args["no_minus_one_for_one_hot"] = True
        args["separation_tokens"] = d.SEPARATION_TOKENS
        args["no_mask_for_od"] = cfg.MODEL.DYHEAD.FUSE_CONFIG.NO_MASK_FOR_OD
        args["no_mask_for_gold"] = cfg.MODEL.DYHEAD.FUSE_CONFIG.NO_MASK_FOR_GOLD
        args["special_safeguard_for_coco_grounding"] = d.SPECIAL_SAFEGUARD_FOR_COCO_GROUNDING
        args["class_agnostic"] = d.CLASS_AGNOSTIC
        args["sample_ratio"] = d.SAMPLE_RATIO
    if d.ONE_HOT:
        args["one_hot"] = True
    if d.OVERRIDE_CATEGORY and d.USE_OVERRIDE_CATEGORY:
        args["override_category"] = parse_override_category(d.OVERRIDE_CATEGORY)
    args["caption_prompt"] = _maybe_json(d.CAPTION_PROMPT)
    args["use_caption_prompt"] = d.USE_CAPTION_PROMPT
    args["tokenizer"] = tokenizer if tokenizer is not None else load_tokenizer(
        cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    return args


def _copies(cfg, name: str, is_train: bool) -> int:
    if name in _COPY_KEYS:
        return getattr(cfg.DATASETS, _COPY_KEYS[name])
    return cfg.DATASETS.GENERAL_COPY if is_train else cfg.DATASETS.GENERAL_COPY_TEST


def build_dataset(cfg, dataset_list, transforms, catalog, is_train: bool = True, extra_args: Optional[dict] = None):
    """Datasets named in ``dataset_list`` (suffixed with ``DATASETS.TRAIN/TEST_DATASETNAME_SUFFIX``).

    Returns a list: one dataset per name for testing, a single (concatenated) dataset for training.
    ``*_COPY`` / ``GENERAL_COPY`` values other than -1 repeat a dataset that many times.
    """
    if not isinstance(dataset_list, (list, tuple)):
        raise RuntimeError("dataset_list should be a list of strings, got {}".format(dataset_list))
    suffix = cfg.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else cfg.DATASETS.TEST_DATASETNAME_SUFFIX
    datasets = []
    for base_name in dataset_list:
        name = base_name + suffix
        entry = catalog.get(name)
        factory_name = entry["factory"]
        if not hasattr(D, factory_name):
            raise NotImplementedError("dataset factory {} (for {}) is not implemented".format(factory_name, name))
        args = dict(entry["args"])
        if factory_name == "COCODataset":
            args["remove_images_without_annotations"] = is_train
        if factory_name in TSV_FACTORIES:
            args["extra_fields"] = ["class"] + (["mask"] if cfg.MODEL.MASK_ON else [])
        if factory_name in GROUNDING_FACTORIES:
            args["return_masks"] = cfg.MODEL.MASK_ON
            args["return_tokens"] = True
            args["max_num_labels"] = cfg.TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM
            args["max_query_len"] = cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN
        args["transforms"] = transforms
        args.update(extra_args or {})
        dataset = getattr(D, factory_name)(**args)
        copies = _copies(cfg, name, is_train)
        if copies != -1:
            dataset = RepeatedDataset(dataset, copies)
        logger.info("%s has %d data points (%s)", name, len(dataset), factory_name)
        datasets.append(dataset)
    if not is_train:
        return datasets
    return [datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)]


def make_data_sampler(dataset, shuffle: bool, distributed: bool, num_replicas=None, rank=None,
                      use_random_seed: bool = False, seed: int = 0):
    """Distributed split, or a single-process shuffled / sequential sampler.

    Single-process shuffling is the one-replica ``DistributedSampler``: its order depends only on ``seed`` and the
    epoch (not on the global random state), so a resumed run sees the batches of the uninterrupted one.
    """
    if distributed:
        return DistributedSampler(dataset, shuffle=shuffle, num_replicas=num_replicas, rank=rank,
                                  use_random=use_random_seed, seed=seed)
    if shuffle:
        return DistributedSampler(dataset, shuffle=True, num_replicas=1, rank=0, use_random=use_random_seed,
                                  seed=seed)
    return torch.utils.data.SequentialSampler(dataset)


def _aspect_ratios(dataset) -> List[float]:
    ratios = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        ratios.append(float(info["height"]) / float(info["width"]) if info else 1.0)
    return ratios


def make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_batch: int, num_iters=None,
                            start_iter: int = 0, drop_last: bool = False):
    """Aspect-ratio grouped (``aspect_grouping`` bins, e.g. ``[1]``) or plain batches, optionally iteration-based."""
    if aspect_grouping:
        bins = aspect_grouping if isinstance(aspect_grouping, (list, tuple)) else [aspect_grouping]
        group_ids = aspect_ratio_groups(_aspect_ratios(dataset), bins)
        batch_sampler = GroupedBatchSampler(sampler, group_ids, images_per_batch, drop_uneven=drop_last)
    else:
        batch_sampler = torch.utils.data.BatchSampler(sampler, images_per_batch, drop_last=drop_last)
    if num_iters is not None:
        batch_sampler = IterationBasedBatchSampler(batch_sampler, num_iters, start_iter)
    return batch_sampler


def make_data_loader(cfg, is_train: bool = True, is_distributed: bool = False, num_replicas=None, rank=None,
                     start_iter: int = 0, tokenizer=None, catalog=None):
    """The reference's loader construction (see the module docstring); ``catalog`` defaults to the config's
    ``DatasetCatalog`` with ``DATASETS.REGISTER`` entries added."""
    from glip.config.paths_catalog import DatasetCatalog, register_datasets
    from glip.utils.comm import get_world_size

    num_gpus = num_replicas or get_world_size()
    if is_train:
        images_per_batch, shuffle, num_iters = cfg.SOLVER.IMS_PER_BATCH, True, cfg.SOLVER.MAX_ITER
    else:
        images_per_batch, shuffle, num_iters, start_iter = cfg.TEST.IMS_PER_BATCH, is_distributed, None, 0
    if images_per_batch % num_gpus != 0:
        raise ValueError("IMS_PER_BATCH ({}) must be divisible by the number of processes ({})".format(
            images_per_batch, num_gpus))
    images_per_gpu = images_per_batch // num_gpus
    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []

    if catalog is None:
        register_datasets(cfg, is_train)
        catalog = DatasetCatalog
    dataset_list = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    transforms = None if not is_train and cfg.TEST.USE_MULTISCALE else build_transforms(cfg, is_train)
    extra_args = dataset_extra_args(cfg, is_train, tokenizer)
    datasets = build_dataset(cfg, dataset_list, transforms, catalog, is_train, extra_args)

    loaders = []
    for dataset in datasets:
        if is_train and cfg.SOLVER.MAX_EPOCH > 0:
            num_iters = cfg.SOLVER.MAX_EPOCH * len(dataset) // cfg.SOLVER.IMS_PER_BATCH
            logger.info("number of iterations: %d", num_iters)
            frozen = cfg.is_frozen()
            cfg.defrost()
            cfg.SOLVER.MAX_ITER = num_iters
            cfg.SOLVER.DATASET_LENGTH = len(dataset)
            if frozen:
                cfg.freeze()
        sampler = make_data_sampler(dataset, shuffle, is_distributed, num_replicas, rank,
                                    cfg.DATALOADER.USE_RANDOM_SEED, seed=cfg.DATASETS.SHUFFLE_SEED)
        batch_sampler = make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_gpu, num_iters,
                                                start_iter, drop_last=is_train)
        collator = (BBoxAugCollator() if not is_train and cfg.TEST.USE_MULTISCALE
                    else BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY))
        loaders.append(torch.utils.data.DataLoader(dataset, num_workers=cfg.DATALOADER.NUM_WORKERS,
                                                   batch_sampler=batch_sampler, collate_fn=collator))
    if is_train and not cfg.DATASETS.ALTERNATIVE_TRAINING and not cfg.DATASETS.MULTISTAGE_TRAINING:
        return loaders[0]
    return loaders
