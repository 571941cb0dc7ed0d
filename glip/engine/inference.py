"""Evaluation loop: run GLIP over a test loader and feed the outputs to the dataset's evaluator.

`inference(...)` follows the reference's `maskrcnn_benchmark.engine.inference.inference`:

* `TEST.EVAL_TASK "detection"`: the dataset's categories become class-name prompts, `TEST.CHUNKED_EVALUATION`
  names per prompt (-1: one prompt). Every image is run once per prompt; the per-prompt detections of an image are
  concatenated (labels are the dataset's contiguous ids, so no remapping is needed).
* `TEST.EVAL_TASK "grounding"`: each image's own caption with its `positive_map_eval` (phrase i -> label i + 1 for
  VLDYHEAD).
* `TEST.EVAL_TASK ""`: the plain detector path `model(images)`.

The evaluation protocol is the one the dataset declares (`evaluation_protocol`: "coco", "lvis", "flickr", see
`glip.evaluation`); its `DatasetEvaluator` receives every batch's per-image BoxLists (network-input pixels),
gathers them over processes and writes its files (COCO: `predictions.pth`, `bbox.json`, `bbox.csv`; LVIS and
Flickr30k: `bbox.csv`).

Batches of several images give the same predictions as one image at a time: images are run in sub-batches of
identical padded shape, each cropped to exactly the tensor a batch of one would hold (`size_divisible` padding
only), and grounding images, which each carry their own prompt, are run one by one.
"""
import datetime
import functools
import logging
import math
import time
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import torch
from tqdm import tqdm

from glip.evaluation import DatasetEvaluator, EvalResult, build_evaluator
from glip.evaluation.evaluator import as_int
from glip.structures.image_list import ImageList
from glip.utils.comm import get_world_size, is_main_process, synchronize

logger = logging.getLogger(__name__)

TASKS = ("", "detection", "grounding")


def inference(model, data_loader, dataset_name, iou_types=("bbox",), box_only=False, device="cuda",
              expected_results=(), expected_results_sigma_tol=4, output_folder=None, cfg=None, verbose=True,
              visualizer=None) -> Optional[EvalResult]:
    """Run `model` over `data_loader` and evaluate with the dataset's protocol (see the module docstring).

    Batches are `glip.data.collate.Batch` (`images`, `targets`, dataset `indices`, ...). `visualizer`, if given,
    is called on every batch as `visualizer(images, targets, indices, outputs)` with the per-image BoxLists
    (network-input pixels). Returns the evaluator's `EvalResult` on rank 0, None on other ranks.
    """
    check_options(cfg)
    dataset = data_loader.dataset
    if verbose:
        logger.info("Start evaluation on %s dataset (%d images).", dataset_name, len(dataset))
    start_time = time.time()
    evaluator = build_evaluator(cfg, dataset, output_folder, iou_types=iou_types, box_only=box_only,
                                expected_results=expected_results,
                                expected_results_sigma_tol=expected_results_sigma_tol, label_offset=label_offset(cfg))
    run_batch = make_batch_runner(cfg, dataset)
    inference_on_dataset(model, data_loader, evaluator, run_batch, torch.device(device), subset=cfg.TEST.SUBSET,
                         verbose=verbose, visualizer=visualizer)
    synchronize()
    log_inference_time(time.time() - start_time, len(dataset))
    return evaluator.evaluate()


def check_options(cfg):
    """Refuse an unknown `TEST.EVAL_TASK` and the unimplemented test-time augmentation by name."""
    if cfg.TEST.EVAL_TASK not in TASKS:
        raise ValueError("TEST.EVAL_TASK must be one of {}, got {!r}".format(TASKS, cfg.TEST.EVAL_TASK))
    if cfg.TEST.USE_MULTISCALE:
        raise NotImplementedError("TEST.USE_MULTISCALE (test-time augmentation) is not implemented")


def make_batch_runner(cfg, dataset) -> Callable:
    """`run_batch(model, images, targets) -> [BoxList per image]` for `TEST.EVAL_TASK` (detection: the dataset's
    category prompts, chunked by `TEST.CHUNKED_EVALUATION`)."""
    task = cfg.TEST.EVAL_TASK
    queries, maps = [None], [None]
    if task == "detection":
        from glip.data.positive_map import create_queries_and_maps_from_dataset

        queries, maps = create_queries_and_maps_from_dataset(dataset, cfg)
        logger.info("Detection prompts: %s", queries)
    return functools.partial(_run_batch, task=task, queries=queries, maps=maps, plus=label_offset(cfg),
                             size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY)


def inference_on_dataset(model, data_loader, evaluator: DatasetEvaluator, run_batch: Callable, device: torch.device,
                         subset: int = -1, verbose: bool = True, visualizer=None):
    """`evaluator.reset()`, then `evaluator.process(indices, targets, outputs)` for every batch (the first
    `subset` batches when `subset` >= 0) with `outputs = run_batch(model, images, targets)` in eval mode."""
    evaluator.reset()
    model.eval()
    iterator = tqdm(data_loader, disable=not verbose or not is_main_process())
    for step, batch in enumerate(iterator):
        if step == subset:
            break
        images = batch.images.to(device)
        with torch.no_grad():
            outputs = run_batch(model, images, batch.targets)
        if visualizer is not None:
            visualizer(images, batch.targets, batch.indices, outputs)
        evaluator.process([as_int(i) for i in batch.indices], batch.targets, outputs)


def log_inference_time(total: float, num_images: int):
    logger.info("Total inference time: %s (%.4f s / img per device, on %d devices)",
                str(datetime.timedelta(seconds=total)), total * get_world_size() / max(num_images, 1),
                get_world_size())


def label_offset(cfg) -> int:
    """Grounding labels start at 1 for VLDYHEAD (label 0 is background in the other heads)."""
    return 1 if cfg.MODEL.RPN_ARCHITECTURE == "VLDYHEAD" else 0


def split_by_shape(images: ImageList, size_divisible: int) -> List[List[int]]:
    """Indices of the batch grouped by the padded shape each image would have alone, in first-seen order."""
    groups: "OrderedDict[tuple, List[int]]" = OrderedDict()
    for index, size in enumerate(images.image_sizes):
        groups.setdefault(padded_shape(size, size_divisible), []).append(index)
    return list(groups.values())


def padded_shape(size: Sequence[int], size_divisible: int) -> tuple:
    """`(h, w)` rounded up to a multiple of `size_divisible` (unchanged when it is 0)."""
    h, w = int(size[0]), int(size[1])
    if size_divisible > 0:
        h = int(math.ceil(h / size_divisible) * size_divisible)
        w = int(math.ceil(w / size_divisible) * size_divisible)
    return h, w


def sub_batch(images: ImageList, indices: Sequence[int], size_divisible: int) -> ImageList:
    """The images at `indices` (same padded shape) as the ImageList a batch of only them would be: (b, 3, h, w)."""
    h, w = padded_shape(images.image_sizes[indices[0]], size_divisible)
    index = torch.as_tensor(list(indices), dtype=torch.long, device=images.tensors.device)
    tensors = images.tensors.index_select(0, index)[:, :, :h, :w]
    return ImageList(tensors.contiguous(), [images.image_sizes[i] for i in indices])


def run_per_shape(model, images: ImageList, captions: List[str], positive_map, size_divisible: int) -> list:
    """`model` on every same-shape sub-batch; returns the outputs (on the CPU) in batch order."""
    outputs = [None] * len(images.image_sizes)
    for group in split_by_shape(images, size_divisible):
        result = model(sub_batch(images, group, size_divisible), captions=[captions[i] for i in group],
                       positive_map=positive_map)
        for i, out in zip(group, result):
            outputs[i] = out.to("cpu")
    return outputs


def _caption_text(caption) -> str:
    return getattr(caption, "text", caption)


def grounding_prompt(target, plus: int):
    """Caption and `{label: [token indices]}` of one grounding target (rows of `positive_map_eval`)."""
    from glip.data.positive_map import create_positive_map_label_to_token_from_positive_map

    caption = _caption_text(target.get_field("caption"))
    label_to_token = create_positive_map_label_to_token_from_positive_map(target.get_field("positive_map_eval"),
                                                                          plus=plus)
    return caption, label_to_token


def _run_batch(model, images: ImageList, targets, task: str, queries, maps, plus: int, size_divisible: int):
    """Per image of the batch: one BoxList (CPU), the chunks of a detection prompt concatenated."""
    from glip.structures.bounding_box import BoxList

    count = len(images.image_sizes)
    if task == "":
        outputs = [None] * count
        for group in split_by_shape(images, size_divisible):
            for i, out in zip(group, model(sub_batch(images, group, size_divisible))):
                outputs[i] = out.to("cpu")
        return outputs
    if task == "grounding":
        outputs = []
        for i in range(count):
            caption, label_to_token = grounding_prompt(targets[i], plus)
            outputs.extend(run_per_shape(model, sub_batch(images, [i], size_divisible), [caption], label_to_token,
                                         size_divisible))
        return outputs
    per_chunk = [run_per_shape(model, images, [query] * count, label_to_token, size_divisible)
                 for query, label_to_token in zip(queries, maps)]
    if len(per_chunk) == 1:
        return per_chunk[0]
    return [BoxList.concate_box_list([chunk[i] for chunk in per_chunk]) for i in range(count)]


__all__ = ["inference", "inference_on_dataset", "make_batch_runner", "check_options", "label_offset"]
