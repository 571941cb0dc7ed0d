"""Pseudo-labelling image-caption pairs with a teacher GLIP (the scaled-up recipes' data, written as caption TSV).

Per pair: the caption's noun phrases (``glip.engine.phrases``: spaCy noun chunks when installed, else rules) are
the entities; the teacher grounds the caption with them; detections (already NMS-ed per phrase by the
post-processor at ``MODEL.ATSS.NMS_TH``) scoring above the threshold become the row's boxes, each with its
phrase's span. Images whose padded inputs have the same shape run as one batch, each with its own caption.
"""
import logging
import os
import re
from collections import Counter
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch

from glip.data.caption_writer import ShardWriter, committed_keys, label_record
from glip.engine.phrases import extract_phrases
from glip.structures.image_list import to_image_list

logger = logging.getLogger(__name__)


class Labelled(NamedTuple):
    """The teacher's result for one pair: ``record`` (label json) is None when skipped (``skip`` says why);
    ``boxes`` / ``scores`` / ``names`` list the kept boxes (xyxy image pixels) with their phrase texts."""
    key: str
    image_b64: Optional[str]
    record: Optional[dict]
    phrases: List[str]
    skip: Optional[str]
    image: object = None
    boxes: tuple = ()
    scores: tuple = ()
    names: tuple = ()


def image_outputs(outputs: Dict[str, object], index: int) -> Dict[str, object]:
    """The head outputs of image ``index`` of a batch, as a batch of one (per-image anchors, tensors sliced)."""
    out = {}
    for key, value in outputs.items():
        if key == "anchors":
            out[key] = [value[index]]
        elif isinstance(value, (list, tuple)):
            out[key] = [v[index: index + 1] for v in value]
        elif torch.is_tensor(value):
            out[key] = value[index: index + 1]
        else:
            out[key] = value
    return out


@torch.no_grad()
def detect_with_captions(model, tensors: Sequence[torch.Tensor], captions: Sequence[str],
                         label_to_tokens: Sequence[dict], size_divisibility: int, device) -> list:
    """Detections of a batch whose images each have their own caption and ``{label: [tokens]}`` map: the steps of
    ``GeneralizedVLRCNN.forward`` with the post-processing run per image. BoxLists in network-input pixels."""
    images = to_image_list(list(tensors), size_divisibility).to(device)
    language = model.encode_text(list(captions), device)
    features = model.backbone(images.tensors)
    outputs = model.rpn(images, features, language)
    return [model.rpn.detect(image_outputs(outputs, i), l2t)[0].to("cpu") for i, l2t in enumerate(label_to_tokens)]


class PseudoLabeler:
    """Labels batches of pairs with the model of ``demo`` (a ``GLIPDemo``: its model, tokenizer and prompt rules).

    ``transforms``: the test transform of the teacher's config (image -> normalised tensor); ``threshold``:
    boxes kept when their score is above it; ``format_version``: the label json layout (v1 / v2).
    """

    def __init__(self, demo, transforms, threshold: float = 0.5, phrase_method: str = "auto",
                 format_version: str = "v1", keep_empty: bool = False):
        self.demo = demo
        self.transforms = transforms
        self.threshold = threshold
        self.phrase_method = phrase_method
        self.format_version = format_version
        self.keep_empty = keep_empty

    def _prepare(self, pair):
        """``(base64, PIL image, phrases, prompt)`` or a skip reason string."""
        try:
            image_b64, image = pair.load()
        except Exception as exc:  # PIL raises several types for unreadable files
            logger.warning("%s: cannot read the image (%s)", pair.key, exc)
            return "unreadable image"
        try:
            phrases = extract_phrases(pair.caption, self.phrase_method)
        except ValueError:
            return "no phrase"
        if len(self.demo.tokenizer(pair.caption)["input_ids"]) > self.demo.max_query_len:
            return "caption longer than MAX_QUERY_LEN tokens"
        try:
            prompts = self.demo.build_prompts(pair.caption, [{"char_bounds": (p.beg, p.end)} for p in phrases])
        except ValueError as exc:
            logger.info("%s: caption not usable as a prompt (%s)", pair.key, exc)
            return "unusable prompt"
        return image_b64, image, phrases, prompts[0]

    def _padded_shape(self, tensor: torch.Tensor) -> tuple:
        div = self.demo.cfg.DATALOADER.SIZE_DIVISIBILITY
        h, w = tensor.shape[-2:]
        return (h, w) if div <= 0 else (-(-h // div) * div, -(-w // div) * div)

    def label(self, pairs: Sequence) -> List[Labelled]:
        """Label ``pairs`` (batched by padded input shape); results in the order of ``pairs``."""
        prepared = [self._prepare(p) for p in pairs]
        results: List[Optional[Labelled]] = [None] * len(pairs)
        ready = {}
        for i, (pair, item) in enumerate(zip(pairs, prepared)):
            if isinstance(item, str):
                results[i] = Labelled(pair.key, None, None, [], item)
            else:
                tensor = self.transforms(item[1])
                ready.setdefault(self._padded_shape(tensor), []).append((i, tensor))
        device = self.demo.device
        for group in ready.values():
            indices = [i for i, _ in group]
            detections = detect_with_captions(
                self.demo.model, [t for _, t in group], [prepared[i][3].caption for i in indices],
                [prepared[i][3].label_to_token for i in indices], self.demo.cfg.DATALOADER.SIZE_DIVISIBILITY,
                device)
            for i, boxes in zip(indices, detections):
                results[i] = self._result(pairs[i], prepared[i], boxes)
        return results

    def _result(self, pair, prepared, detections) -> Labelled:
        image_b64, image, phrases, _ = prepared
        detections = detections.resize(image.size)
        scores = detections.get_field("scores")
        keep = torch.nonzero(scores > self.threshold).flatten()
        keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
        labels = detections.get_field("labels")[keep].tolist()
        phrase_texts = [p.text for p in phrases]
        if not labels and not self.keep_empty:
            return Labelled(pair.key, None, None, phrase_texts, "no box above the threshold")
        boxes, kept_scores = detections.bbox[keep].tolist(), scores[keep].tolist()
        record = label_record(pair.caption, image.size, boxes, kept_scores,
                              [[[phrases[j - 1].beg, phrases[j - 1].end]] for j in labels], self.format_version)
        return Labelled(pair.key, image_b64, record, phrase_texts, None, image, tuple(boxes), tuple(kept_scores),
                        tuple(phrase_texts[j - 1] for j in labels))


def shard_name(rank: int, world: int) -> str:
    return "part{:03d}of{:03d}".format(rank, world)


def save_preview(result: Labelled, folder: str) -> str:
    """Draw the result's boxes and phrases on its image; returns the PNG path."""
    from glip.utils.visualize import draw_detections

    os.makedirs(folder, exist_ok=True)
    drawn = draw_detections(result.image, torch.as_tensor(result.boxes).reshape(-1, 4),
                            torch.ones(len(result.boxes), dtype=torch.int64), torch.as_tensor(result.scores),
                            list(result.names))
    path = os.path.join(folder, re.sub(r"[^A-Za-z0-9._-]", "_", result.key) + ".png")
    drawn.save(path)
    return path


def label_shard(labeler: PseudoLabeler, pairs: Sequence, shards_dir: str, rank: int = 0, world: int = 1,
                batch_size: int = 4, previews: int = 0, preview_dir: Optional[str] = None,
                progress: bool = True) -> str:
    """Label this process's share of ``pairs`` (``pairs[rank::world]``) into its shard of ``shards_dir``,
    skipping keys any shard already committed; commits after every batch. Returns the shard's yaml path."""
    from tqdm import tqdm

    mine = list(pairs[rank::world])
    done = committed_keys(shards_dir)
    writer = ShardWriter(shards_dir, shard_name(rank, world), labeler.format_version)
    todo = [p for p in mine if p.key not in done]
    if len(todo) < len(mine):
        logger.info("rank %d: resuming, %d of %d pairs already labelled", rank, len(mine) - len(todo), len(mine))
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="pseudo-label rank {}".format(rank),
               unit="img", disable=not progress, position=rank, dynamic_ncols=True)
    drawn = 0
    for start in range(0, len(todo), batch_size):
        for result in labeler.label(todo[start: start + batch_size]):
            counts = {"images": 1, "phrases": len(result.phrases), "boxes": len(result.boxes),
                      "rows": int(result.record is not None)}
            if result.skip:
                counts["skipped: " + result.skip] = 1
            writer.add(result.key, result.image_b64, result.record, **counts)
            if result.record is not None and drawn < previews and preview_dir:
                save_preview(result, preview_dir)
                drawn += 1
        writer.commit()
        bar.update(min(batch_size, len(todo) - start))
    bar.close()
    return writer.close()


def summarize(counts: Dict[str, float], seconds: float) -> dict:
    """The run summary from summed shard counts: images, rows written, phrases, boxes, means, skips."""
    images = int(counts.get("images", 0))
    rows = int(counts.get("rows", 0))
    boxes = int(counts.get("boxes", 0))
    return {"images": images, "rows_written": rows, "phrases": int(counts.get("phrases", 0)), "boxes_kept": boxes,
            "mean_boxes_per_image": boxes / images if images else 0.0,
            "mean_boxes_per_written_row": boxes / rows if rows else 0.0,
            "skipped": {k[len("skipped: "):]: int(v) for k, v in sorted(counts.items()) if k.startswith("skipped: ")},
            "seconds": round(seconds, 1)}


def total_counts(shards_dir: str) -> Counter:
    """The counts of every shard's last commit, summed."""
    from glip.data.caption_writer import read_progress, shard_names

    total = Counter()
    for name in shard_names(shards_dir):
        total.update(read_progress(os.path.join(shards_dir, name + ".progress.json")).get("counts", {}))
    return total
