"""Data loaders from the config: datasets by catalog name, transforms, samplers and the batch collator.

``make_data_loader(cfg, is_train, is_distributed, start_iter)`` follows the reference: training returns ONE loader
over the concatenation of ``DATASETS.TRAIN`` (iteration-based: ``SOLVER.MAX_ITER`` batches, or
:func:`train_iterations` batches for ``SOLVER.MAX_EPOCH`` epochs); testing returns a list with one sequential
loader per ``DATASETS.TEST`` entry. The config is only read, never written.

Each name is resolved through the dataset catalog (``glip.config.paths_catalog``) to a registered factory
(``glip.data.datasets.registry``), which receives its catalog arguments, the run arguments it declares
(:func:`run_arguments`) and the config options it declares (``glip.data.dataset_options``).
"""
import logging
from typing import List, Optional, Sequence

import torch

from glip.data.collate import BatchCollator, BBoxAugCollator
from glip.data.dataset_options import check_options, option_values
from glip.data.datasets.concat import ConcatDataset, RepeatedDataset
from glip.data.datasets.registry import factory_of
from glip.data.positive_map import load_tokenizer
from glip.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    aspect_ratio_groups,
    iterations_for_epochs,
)
from glip.data.transforms import build_transforms

logger = logging.getLogger(__name__)

# Catalog names repeated by their own DATASETS.*_COPY key; other names use GENERAL_COPY(_TEST).
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


def train_iterations(cfg, dataset_len: int) -> int:
    """The training schedule length: ``SOLVER.MAX_EPOCH`` epochs of ``dataset_len`` images
    (:func:`iterations_for_epochs`) when ``MAX_EPOCH > 0``, else ``SOLVER.MAX_ITER``."""
    solver = cfg.SOLVER
    if solver.MAX_EPOCH > 0:
        return iterations_for_epochs(solver.MAX_EPOCH, dataset_len, solver.IMS_PER_BATCH)
    return solver.MAX_ITER


def run_arguments(cfg, is_train: bool, transforms) -> dict:
    """Constructor arguments fixed by the run rather than by a dataset option; each factory takes those it
    declares (``tokenizer`` is added by :func:`build_dataset` when a factory declares it)."""
    return {
        "transforms": transforms,
        "remove_images_without_annotations": is_train,
        "return_tokens": True,
        "max_query_len": cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN,
        "max_num_labels": cfg.TEST.MDETR_STYLE_AGGREGATE_CLASS_NUM,
    }


def _copies(cfg, name: str, is_train: bool) -> int:
    if name in _COPY_KEYS:
        return getattr(cfg.DATASETS, _COPY_KEYS[name])
    return cfg.DATASETS.GENERAL_COPY if is_train else cfg.DATASETS.GENERAL_COPY_TEST


def build_dataset(cfg, dataset_list, transforms, catalog, is_train: bool = True, tokenizer=None):
    """Datasets named in ``dataset_list`` (suffixed with ``DATASETS.TRAIN/TEST_DATASETNAME_SUFFIX``).

    Returns a list: one dataset per name for testing, a single (concatenated) dataset for training.
    ``*_COPY`` / ``GENERAL_COPY`` values other than -1 repeat a dataset that many times. Factories and options
    are checked for every name before any dataset is built; ``tokenizer`` defaults to
    ``MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE``'s, loaded only when a factory takes one.
    """
    if not isinstance(dataset_list, (list, tuple)):
        raise RuntimeError("dataset_list should be a list of strings, got {}".format(dataset_list))
    suffix = cfg.DATASETS.TRAIN_DATASETNAME_SUFFIX if is_train else cfg.DATASETS.TEST_DATASETNAME_SUFFIX
    names = [base_name + suffix for base_name in dataset_list]
    factories = [factory_of(name, catalog) for name in names]
    check_options(cfg, is_train, names, factories)
    shared_args = dict(run_arguments(cfg, is_train, transforms), **option_values(cfg, is_train))
    if any("tokenizer" in f.parameters for f in factories):
        shared_args["tokenizer"] = tokenizer if tokenizer is not None else load_tokenizer(
            cfg.MODEL.LANGUAGE_BACKBONE.TOKENIZER_TYPE)
    datasets = []
    for name, factory in zip(names, factories):
        args = factory.catalog_args(name, catalog.get(name))
        args.update({k: v for k, v in shared_args.items() if k in factory.parameters})
        dataset = factory.cls(**args)
        copies = _copies(cfg, name, is_train)
        if copies != -1:
            dataset = RepeatedDataset(dataset, copies)
        logger.info("%s has %d data points (%s)", name, len(dataset), factory.name)
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
                     start_iter: int = 0, tokenizer=None, catalog=None, dataset_names: Optional[Sequence[str]] = None):
    """The reference's loader construction (see the module docstring); ``catalog`` defaults to the config's
    ``DatasetCatalog`` with ``DATASETS.REGISTER`` entries added. A training loader yields
    ``train_iterations(cfg, len(loader.dataset))`` batches (from ``start_iter``). ``dataset_names`` replaces
    ``DATASETS.TRAIN`` / ``DATASETS.TEST`` (e.g. finetune's registered ``test`` split)."""
    from glip.config.paths_catalog import DatasetCatalog, register_datasets
    from glip.utils.comm import get_world_size

    num_gpus = num_replicas or get_world_size()
    images_per_batch = cfg.SOLVER.IMS_PER_BATCH if is_train else cfg.TEST.IMS_PER_BATCH
    if images_per_batch % num_gpus != 0:
        raise ValueError("IMS_PER_BATCH ({}) must be divisible by the number of processes ({})".format(
            images_per_batch, num_gpus))
    images_per_gpu = images_per_batch // num_gpus
    aspect_grouping = [1] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else []

    if catalog is None:
        register_datasets(cfg, is_train)
        catalog = DatasetCatalog
    dataset_list = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
    if dataset_names is not None:
        dataset_list = tuple(dataset_names)
    transforms = None if not is_train and cfg.TEST.USE_MULTISCALE else build_transforms(cfg, is_train)
    datasets = build_dataset(cfg, dataset_list, transforms, catalog, is_train, tokenizer)

    loaders = []
    for dataset in datasets:
        num_iters = None
        if is_train:
            num_iters = train_iterations(cfg, len(dataset))
            logger.info("number of iterations: %d (dataset of %d images, SOLVER.MAX_EPOCH %d, SOLVER.MAX_ITER %d)",
                        num_iters, len(dataset), cfg.SOLVER.MAX_EPOCH, cfg.SOLVER.MAX_ITER)
        sampler = make_data_sampler(dataset, shuffle=is_train or is_distributed, distributed=is_distributed,
                                    num_replicas=num_replicas, rank=rank,
                                    use_random_seed=cfg.DATALOADER.USE_RANDOM_SEED, seed=cfg.DATASETS.SHUFFLE_SEED)
        batch_sampler = make_batch_data_sampler(dataset, sampler, aspect_grouping, images_per_gpu, num_iters,
                                                start_iter if is_train else 0, drop_last=is_train)
        collator = (BBoxAugCollator() if not is_train and cfg.TEST.USE_MULTISCALE
                    else BatchCollator(cfg.DATALOADER.SIZE_DIVISIBILITY))
        loaders.append(torch.utils.data.DataLoader(dataset, num_workers=cfg.DATALOADER.NUM_WORKERS,
                                                   batch_sampler=batch_sampler, collate_fn=collator))
    if is_train and not cfg.DATASETS.ALTERNATIVE_TRAINING and not cfg.DATASETS.MULTISTAGE_TRAINING:
        return loaders[0]
    return loaders


__all__ = ["make_data_loader", "build_dataset", "train_iterations", "make_data_sampler", "make_batch_data_sampler"]
