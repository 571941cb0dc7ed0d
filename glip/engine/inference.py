"""Evaluation loop: run GLIP over a test loader, gather the predictions on rank 0, save and evaluate them.

`inference(...)` follows the reference's `maskrcnn_benchmark.engine.inference.inference`:

* `TEST.EVAL_TASK "detection"`: the dataset's categories become class-name prompts, `TEST.CHUNKED_EVALUATION`
  names per prompt (-1: one prompt). Every image is run once per prompt; the per-prompt detections of an image are
  concatenated (labels are the dataset's contiguous ids, so no remapping is needed).
* `TEST.EVAL_TASK "grounding"`: each image's own caption with its `positive_map_eval` (phrase i -> label i + 1 for
  VLDYHEAD).
* Flickr30k (`"flickr"` in `DATASETS.TEST[0]`) and LVIS (`"lvis"`) stream boxes resized to the original image size
  into their evaluators (recall / Fixed AP) and write `bbox.csv`; everything else is collected as
  `{dataset index: BoxList}` in network-input pixels, gathered over processes, saved to `predictions.pth` and
  evaluated by `glip.evaluation.evaluate` (COCO-style: `bbox.json`, `bbox.csv`), which resizes the boxes itself.
* `TEST.EVAL_TASK ""`: the plain detector path `model(images)`.

Batches of several images give the same predictions as one image at a time: images are run in sub-batches of
identical padded shape, each cropped to exactly the tensor a batch of one would hold (`size_divisible` padding
only), and grounding images, which each carry their own prompt, are run one by one.
"""
import datetime
import logging
import math
import os
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from glip.structures.image_list import ImageList
from glip.utils.comm import all_gather, get_world_size, is_main_process, synchronize

logger = logging.getLogger(__name__)

TASKS = ("", "detection", "grounding")


def eval_kind(cfg) -> str:
    """"flickr", "lvis" or "coco": which evaluator the first test dataset's name selects (the reference's rule)."""
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else ""
    if isinstance(name, (list, tuple)):
        name = name[0]
    if "flickr" in name:
        return "flickr"
    if "lvis" in name:
        return "lvis"
    return "coco"


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


def original_size(target, dataset, index) -> tuple:
    """`(w, h)` of the original image: the target's `orig_size` (h, w) when it has one, else the dataset's info."""
    size = None
    if isinstance(target, dict):
        size = target.get("orig_size")
    elif hasattr(target, "has_field") and target.has_field("orig_size"):
        size = target.get_field("orig_size")
    if size is not None:
        h, w = (int(v) for v in size)
        return w, h
    info = dataset.get_img_info(index)
    return int(info["width"]), int(info["height"])


def _caption_text(caption) -> str:
    return getattr(caption, "text", caption)


def grounding_prompt(target, plus: int):
    """Caption and `{label: [token indices]}` of one grounding target (rows of `positive_map_eval`)."""
    from glip.data.positive_map import create_positive_map_label_to_token_from_positive_map

    caption = _caption_text(target.get_field("caption"))
    label_to_token = create_positive_map_label_to_token_from_positive_map(target.get_field("positive_map_eval"),
                                                                          plus=plus)
    return caption, label_to_token


def _target_value(target, key, default=None):
    if isinstance(target, dict):
        return target.get(key, default)
    return target.get_field(key) if target.has_field(key) else default


def build_evaluator(kind: str, cfg, dataset):
    """The streaming evaluator of Flickr30k / LVIS; None for COCO-style datasets."""
    if kind == "flickr":
        from glip.evaluation.flickr import build_flickr_evaluator

        return build_flickr_evaluator(cfg)
    if kind == "lvis":
        from glip.evaluation.lvis import build_lvis_evaluator

        return build_lvis_evaluator(cfg, getattr(dataset, "ann_file", None) or dataset.coco.dataset)
    return None


def _as_int(value):
    return int(value.item()) if torch.is_tensor(value) else int(value)


def accumulate_predictions(predictions_per_process: Dict[int, object]) -> Optional[list]:
    """Gather `{dataset index: prediction}` from every process; on rank 0 the list ordered by index, else None."""
    gathered = all_gather(predictions_per_process)
    if not is_main_process():
        return None
    merged = {}
    for part in gathered:
        merged.update(part)
    indices = sorted(merged)
    if indices and len(indices) != indices[-1] + 1:
        logger.warning("Number of images gathered from the processes is not a contiguous set; "
                       "some images might be missing from the evaluation")
    return [merged[i] for i in indices]


def inference(model, data_loader, dataset_name, iou_types=("bbox",), box_only=False, device="cuda",
              expected_results=(), expected_results_sigma_tol=4, output_folder=None, cfg=None, verbose=True,
              visualizer=None):
    """Run `model` over `data_loader` and evaluate (see the module docstring).

    Batches are `(ImageList, targets, dataset indices, ...)`. `visualizer`, if given, is called on every batch as
    `visualizer(images, targets, indices, outputs)` with the per-image BoxLists (network-input pixels). Returns,
    on rank 0, what the evaluator returns (COCO: `(COCOResults, coco_results)`; Flickr: the recall dict; LVIS: the
    metrics dict); None on other ranks.
    """
    device = torch.device(device)
    dataset = data_loader.dataset
    task = cfg.TEST.EVAL_TASK
    if task not in TASKS:
        raise ValueError("TEST.EVAL_TASK must be one of {}, got {!r}".format(TASKS, task))
    if cfg.TEST.USE_MULTISCALE:
        raise NotImplementedError("TEST.USE_MULTISCALE (test-time augmentation) is not implemented")
    if verbose:
        logger.info("Start evaluation on %s dataset (%d images).", dataset_name, len(dataset))
    start_time = time.time()

    queries, maps = [None], [None]
    if task == "detection":
        from glip.data.positive_map import create_queries_and_maps_from_dataset

        queries, maps = create_queries_and_maps_from_dataset(dataset, cfg)
        logger.info("Detection prompts: %s", queries)
    kind = eval_kind(cfg) if task else "coco"
    evaluator = build_evaluator(kind, cfg, dataset)
    plus = label_offset(cfg)
    size_divisible = cfg.DATALOADER.SIZE_DIVISIBILITY

    model.eval()
    results: Dict[int, object] = {}
    iterator = tqdm(data_loader, disable=not verbose or not is_main_process())
    for step, batch in enumerate(iterator):
        if step == cfg.TEST.SUBSET:
            break
        images, targets, indices = batch[0], batch[1], batch[2]
        images = images.to(device)
        with torch.no_grad():
            outputs = _run_batch(model, images, targets, task, queries, maps, plus, size_divisible)
        if visualizer is not None:
            visualizer(images, targets, indices, outputs)
        if evaluator is not None:
            evaluator.update(_evaluator_inputs(kind, outputs, targets, indices, dataset, maps, plus))
        else:
            results.update({_as_int(i): out for i, out in zip(indices, outputs)})

    if evaluator is not None:
        return _finish_streaming(evaluator, kind, output_folder)

    synchronize()
    total = time.time() - start_time
    logger.info("Total inference time: %s (%.4f s / img per device, on %d devices)",
                str(datetime.timedelta(seconds=total)), total * get_world_size() / max(len(dataset), 1),
                get_world_size())
    predictions = accumulate_predictions(results)
    if not is_main_process():
        return None
    if output_folder:
        os.makedirs(output_folder, exist_ok=True)
        torch.save(predictions, os.path.join(output_folder, "predictions.pth"))
    from glip.evaluation import evaluate

    return evaluate(dataset=dataset, predictions=predictions, output_folder=output_folder, box_only=box_only,
                    iou_types=iou_types, expected_results=expected_results,
                    expected_results_sigma_tol=expected_results_sigma_tol)


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


def _evaluator_inputs(kind, outputs, targets, indices, dataset, maps, plus):
    """Per-image inputs of the Flickr / LVIS evaluators, boxes resized to the original image size."""
    items = []
    for output, target, index in zip(outputs, targets, indices):
        output = output.resize(original_size(target, dataset, _as_int(index)))
        if kind == "flickr":
            from glip.evaluation.flickr import flickr_post_process

            num_phrases = len(target.get_field("positive_map_eval"))
            items.append(flickr_post_process(output, _target_value(target, "original_img_id"),
                                             _target_value(target, "sentence_id"), num_phrases, plus=plus))
        else:
            image_id = _target_value(target, "image_id", None)
            image_id = dataset.id_to_img_map[_as_int(index)] if image_id is None else _as_int(image_id)
            output = output.convert("xyxy")
            items.append((image_id, {"scores": output.get_field("scores"), "labels": output.get_field("labels"),
                                     "boxes": output.bbox}))
    return items


def _finish_streaming(evaluator, kind: str, output_folder: Optional[str]):
    """Gather the evaluator over processes, summarize on rank 0 and write its `bbox.csv`."""
    evaluator.synchronize_between_processes()
    evaluator.accumulate()
    score = evaluator.summarize()
    result = None
    if is_main_process():
        if output_folder and score is not None:
            os.makedirs(output_folder, exist_ok=True)
            path = os.path.join(output_folder, "bbox.csv")
            if kind == "flickr":
                from glip.evaluation.flickr import write_flickr_results

                write_flickr_results(score, path)
            else:
                from glip.evaluation.lvis import write_lvis_results

                write_lvis_results(score, path)
        result = score if kind == "flickr" else evaluator.results
    synchronize()
    return result
