"""`GLIPDemo`: inference for users (images + a caption or class names -> boxes).

Images are BGR uint8 arrays (H, W, 3), as OpenCV loads them (grayscale, BGRA, 16-bit and float arrays are
converted; `load_image` reads files with PIL). Results are BoxLists in original-image pixels with fields
`scores` and `labels` (1-based index of the phrase / class name, see `entities`).

Beyond the reference's single-image `compute_prediction` / `inference`:
* `predict(images, caption)` runs a list of images in batches. Images whose padded network inputs have the same
  shape are batched into one ImageList; other shapes go to separate batches, because GLIP's output depends on
  the zero padding (Swin windows and the image-text fusion attend over padded pixels) and batching must not
  change a result.
* class lists (and "a. b. c." captions) longer than the language model's MAX_QUERY_LEN tokens, or with more
  names than the post-processor has class columns (NUM_CLASSES - 1), are split into prompts of whole
  categories (`glip.engine.chunking`), run one by one and merged with per-class NMS; a list that fits runs as
  one prompt, unchanged.
* free captions without spans get their phrases offline (`glip.engine.phrases`).
* test-time augmentation (`test_time_augmentation`, default TEST.USE_MULTISCALE): each image is run at every
  TEST.SCALES (and mirrored with TEST.FLIP) and the views are merged per phrase (`glip.engine.tta`);
  `min_image_size` is then not used.
"""
import functools
import logging
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF

from glip.data.positive_map import (create_positive_map, create_positive_map_label_to_token_from_positive_map)
from glip.engine.chunking import CATEGORY_SEPARATOR, chunk_categories, map_labels, merge_chunk_detections
from glip.engine.phrases import extract_phrases, is_separator_list, split_on_separator
from glip.structures.bounding_box import BoxList
from glip.structures.image_list import to_image_list

logger = logging.getLogger(__name__)

Caption = Union[str, Sequence[str]]


class ImageLoadError(ValueError):
    """A file that cannot be read as an image (the message names it)."""


def to_bgr_uint8(image) -> np.ndarray:
    """Any common image array as (H, W, 3) BGR uint8.

    Accepts (H, W) / (H, W, 1) grayscale, (H, W, 2) grayscale+alpha, (H, W, 3) BGR, (H, W, 4) BGRA (alpha
    dropped), uint8, uint16 (16-bit: scaled by 255/65535), bool, and float arrays (in [0, 1] when their maximum is
    <= 1, else in [0, 255]). A PIL image is taken as RGB and reordered to BGR.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - PIL ships with torchvision
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return pil_to_bgr_uint8(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an image array (H, W[, C]), got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an (H, W), (H, W, 1|2|3|4) image array, got shape {image.shape}")
    if image.shape[2] in (2, 4):
        image = image[:, :, : image.shape[2] - 1]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.bool_:
        return np.ascontiguousarray(image.astype(np.uint8) * 255)
    if image.dtype == np.uint16:
        return np.ascontiguousarray(np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8))
    if np.issubdtype(image.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.round(image * scale), 0, 255).astype(np.uint8))
    if np.issubdtype(image.dtype, np.integer):
        top = 65535.0 if int(image.max()) > 255 else 255.0
        return np.ascontiguousarray(np.round(np.clip(image, 0, top) * (255.0 / top)).astype(np.uint8))
    raise ValueError(f"unsupported image dtype {image.dtype}")


def pil_to_bgr_uint8(image) -> np.ndarray:
    """A PIL image in any mode (RGB, RGBA, L, LA, P, I;16, I, F, CMYK, ...) as (H, W, 3) BGR uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.array(image)
        if image.mode == "I" and array.size and int(array.max()) <= 255:
            array = array.astype(np.uint8)
        elif image.mode.startswith("I"):
            array = array.astype(np.uint16) if int(array.max(initial=0)) <= 65535 else array
        return to_bgr_uint8(array)
    if image.mode in ("L", "RGB"):
        rgb = np.array(image.convert("RGB"))
    else:  # palette, alpha, CMYK, YCbCr, ...: PIL converts (alpha dropped)
        rgb = np.array(image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file as (H, W, 3) BGR uint8; raises ImageLoadError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return pil_to_bgr_uint8(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"cannot read {path} as an image ({err})") from err


class Prompt(NamedTuple):
    """One prompt run through the model: its caption, {label: [token indices]} and the global 1-based labels."""
    caption: str
    label_to_token: Dict[int, List[int]]
    labels: List[int]


class GLIPDemo:
    """Build (and load) a GLIP model from a config and run it on images.

    Args:
        cfg: a merged config (`glip.config.cfg` + yaml); `cfg.MODEL.WEIGHT` is loaded when `load_model`.
        confidence_threshold: score threshold of `inference` / `predict` (a float, or one per label).
        min_image_size: resize the short side to this (no resizing when None), as the reference demo does.
        load_model: load `cfg.MODEL.WEIGHT` into the built model; False keeps its initialisation.
        phrase_method: how free captions without spans are split into phrases (`glip.engine.phrases`).
        model: an already built GLIP model to use instead of building one from `cfg` (e.g. shared, or filled
            for tests); `load_model` still loads `cfg.MODEL.WEIGHT` into it.
        test_time_augmentation: run every image through the TEST.* views and merge them (`glip.engine.tta`);
            None follows TEST.USE_MULTISCALE.
    """

    def __init__(self, cfg, confidence_threshold: Union[float, Sequence[float]] = 0.7,
                 min_image_size: Optional[int] = None, load_model: bool = True, phrase_method: str = "auto",
                 model: Optional[torch.nn.Module] = None, test_time_augmentation: Optional[bool] = None):
        from glip.config.audit import check_config
        from glip.engine.tta import build_tta
        from glip.modeling.detector import build_detection_model

        check_config(cfg)

        self.cfg = cfg.clone()
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = model if model is not None else build_detection_model(self.cfg)
        self.model.eval()
        self.model.to(self.device)
        if load_model and cfg.MODEL.WEIGHT:
            self.load_weights(cfg.MODEL.WEIGHT)
        self.tokenizer = self.model.tokenizer
        self.min_image_size = min_image_size
        self.confidence_threshold = confidence_threshold
        self.phrase_method = phrase_method
        self.max_query_len = int(cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN)
        self.nms_thresh = float(cfg.MODEL.ATSS.NMS_TH)
        self.detections_per_img = int(cfg.MODEL.ATSS.DETECTIONS_PER_IMG)
        aggregate = int(cfg.TEST.get("MDETR_STYLE_AGGREGATE_CLASS_NUM", -1))
        self.max_classes_per_prompt = aggregate if aggregate != -1 else int(cfg.MODEL.ATSS.NUM_CLASSES) - 1
        self.entities: List[str] = []
        self.positive_map_label_to_token: Dict[int, List[int]] = {}
        self.prompts: List[Prompt] = []
        if test_time_augmentation is None:
            test_time_augmentation = bool(cfg.TEST.USE_MULTISCALE)
        self.tta = build_tta(cfg) if test_time_augmentation else None

    def load_weights(self, path) -> dict:
        """Load a checkpoint into the model; `glip.engine.weights.WeightLoadError` names the keys that do not fit."""
        from glip.engine.weights import load_weights

        return load_weights(self.model, path)

    # ----------------------------------------------------------------------------------------------- images
    def transform(self, image) -> torch.Tensor:
        """Image (see `to_bgr_uint8`) -> (3, h, w) float, BGR, 0-255 scale, normalised with PIXEL_MEAN/STD."""
        image = TF.to_pil_image(to_bgr_uint8(image))
        if self.min_image_size is not None:
            image = TF.resize(image, self.min_image_size)
        tensor = TF.to_tensor(image)
        tensor = tensor * 255 if self.cfg.INPUT.TO_BGR255 else tensor[[2, 1, 0]]
        return TF.normalize(tensor, mean=list(self.cfg.INPUT.PIXEL_MEAN), std=list(self.cfg.INPUT.PIXEL_STD))

    # ---------------------------------------------------------------------------------------------- prompts
    def prompt(self, caption: Caption, custom_entity: Optional[Sequence[dict]] = None):
        """(caption string, per-phrase char spans, phrase names) for a caption or a list of class names.

        A list becomes `name . name . ... ` (the reference demo's prompt). A string uses `custom_entity` spans
        (`{"char_bounds": (beg, end)}` or `{"span": text}`, first match) when given, else `phrase_method`.
        """
        if isinstance(caption, (list, tuple)):
            names = list(caption)
            if not names or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"class names must be non-empty strings, got {names!r}")
            text, spans = "", []
            for name in names:
                spans.append([[len(text), len(text) + len(name)]])
                text += name + CATEGORY_SEPARATOR
            return text, spans, names
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a string or a list of class names, got {type(caption).__name__}")
        if not caption.strip():
            raise ValueError(f"the caption is empty: {caption!r}")
        if custom_entity is None:
            phrases = extract_phrases(caption, self.phrase_method)
            return caption, [[[p.beg, p.end]] for p in phrases], [p.text for p in phrases]
        if not custom_entity:
            raise ValueError("custom_entity is empty: give at least one phrase")
        spans, names = [], []
        for entity in custom_entity:
            if "char_bounds" in entity:
                beg, end = (int(v) for v in entity["char_bounds"])
                if not 0 <= beg < end <= len(caption):
                    raise ValueError(f"char_bounds {(beg, end)} are outside caption {caption!r} "
                                     f"(length {len(caption)})")
                spans.append([[beg, end]])
                names.append(caption[beg:end])
            elif "span" in entity:
                phrase = str(entity["span"])
                match = re.search(re.escape(phrase), caption) if phrase.strip() else None
                if match is None:
                    raise ValueError(f"phrase {phrase!r} not found in caption {caption!r}")
                spans.append([[match.start(), match.end()]])
                names.append(phrase)
            else:
                raise ValueError(f"each custom_entity needs 'char_bounds' or 'span', got {entity!r}")
        return caption, spans, names

    def _single_prompt(self, caption: str, spans, labels: List[int]) -> Prompt:
        tokenized = self.tokenizer([caption], return_tensors="pt")
        num_tokens = tokenized["input_ids"].shape[1]
        if num_tokens > self.max_query_len:
            raise ValueError(f"the caption has {num_tokens} tokens, more than the language model's "
                             f"{self.max_query_len}; pass the class names as a list to have it split")
        positive_map = create_positive_map(tokenized, spans)
        empty = [i for i in range(len(spans)) if not bool(positive_map[i].any())]
        if empty:
            bad = [caption[spans[i][0][0]:spans[i][0][1]] for i in empty]
            raise ValueError(f"phrases {bad!r} cover no token of caption {caption!r}")
        label_to_token = create_positive_map_label_to_token_from_positive_map(positive_map, plus=1)
        return Prompt(caption, label_to_token, labels)

    def build_prompts(self, caption: Caption, custom_entity: Optional[Sequence[dict]] = None) -> List[Prompt]:
        """The prompts to run for `caption`: one, or one per chunk of whole categories when it is too long.

        Sets `entities` (the names of labels 1..K) and `prompts`.
        """
        if isinstance(caption, str) and custom_entity is None and is_separator_list(caption):
            items = [p.text for p in split_on_separator(caption)]
            if self._count_tokens(caption) > self.max_query_len or len(items) > self.max_classes_per_prompt > 0:
                caption = items
        text, spans, names = self.prompt(caption, custom_entity)
        self.entities = list(names)
        if isinstance(caption, (list, tuple)) and (self._count_tokens(text) > self.max_query_len
                                                   or len(names) > self.max_classes_per_prompt > 0):
            chunks = chunk_categories(names, self.tokenizer, self.max_query_len, CATEGORY_SEPARATOR,
                                      max_names=self.max_classes_per_prompt)
            logger.info("%d class names do not fit one prompt (%d tokens, %d classes): running %d prompts",
                        len(names), self.max_query_len, self.max_classes_per_prompt, len(chunks))
            prompts = []
            for chunk in chunks:
                sub_text, sub_spans, _ = self.prompt([names[i] for i in chunk])
                prompts.append(self._single_prompt(sub_text, sub_spans, [i + 1 for i in chunk]))
        else:
            if len(names) > self.max_classes_per_prompt > 0:
                raise ValueError(f"the caption has {len(names)} phrases; the model scores at most "
                                 f"{self.max_classes_per_prompt} per prompt (MODEL.ATSS.NUM_CLASSES - 1)")
            prompts = [self._single_prompt(text, spans, list(range(1, len(names) + 1)))]
        self.prompts = prompts
        self.positive_map_label_to_token = prompts[0].label_to_token if len(prompts) == 1 else {}
        return prompts

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    # ------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def _run_batch(self, tensors: List[torch.Tensor], prompts: List[Prompt]) -> List[BoxList]:
        """Detections of a batch of transformed images (same padded shape), in network-input pixels."""
        image_list = to_image_list(tensors, self.cfg.DATALOADER.SIZE_DIVISIBILITY).to(self.device)
        per_prompt = []
        for prompt in prompts:
            outputs = self.model(image_list, captions=[prompt.caption] * len(tensors),
                                 positive_map=prompt.label_to_token)
            outputs = [o.to(torch.device("cpu")) for o in outputs]
            if len(prompts) > 1:
                outputs = [map_labels(o, [label - 1 for label in prompt.labels]) for o in outputs]
            per_prompt.append(outputs)
        if len(prompts) == 1:
            return per_prompt[0]
        return [merge_chunk_detections(list(per_image), self.nms_thresh, self.detections_per_img)
                for per_image in zip(*per_prompt)]

    def _padded_shape(self, tensor: torch.Tensor):
        div = self.cfg.DATALOADER.SIZE_DIVISIBILITY
        h, w = tensor.shape[-2:]
        return (h, w) if div <= 0 else (-(-h // div) * div, -(-w // div) * div)

    def predict_all(self, images: Sequence, caption: Caption, custom_entity: Optional[Sequence[dict]] = None,
                    batch_size: int = 4) -> List[BoxList]:
        """All detections (no threshold) per image, in original-image pixels; see `predict`."""
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) or not isinstance(images, (list, tuple)):
            raise TypeError("images must be a list of images (use compute_prediction for a single image)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        prompts = self.build_prompts(caption, custom_entity)
        arrays = [load_image(image) if isinstance(image, (str, Path)) else to_bgr_uint8(image) for image in images]
        if self.tta is not None:
            return self._predict_augmented(arrays, prompts)
        tensors = [self.transform(array) for array in arrays]
        groups: Dict[tuple, List[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(self._padded_shape(tensor), []).append(index)
        results: List[Optional[BoxList]] = [None] * len(arrays)
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                batch = indices[start: start + batch_size]
                for index, prediction in zip(batch, self._run_batch([tensors[i] for i in batch], prompts)):
                    height, width = arrays[index].shape[:2]
                    results[index] = prediction.resize((width, height))
        return results

    def _predict_augmented(self, arrays: List[np.ndarray], prompts: List[Prompt]) -> List[BoxList]:
        """Test-time augmentation of each BGR array alone, merged over the prompt's labels (original pixels)."""
        from PIL import Image

        tta = self.tta if len(self.cfg.TEST.SELECT_CLASSES) else self.tta.with_classes(
            range(1, len(self.entities) + 1))
        detect = functools.partial(self._run_batch, prompts=prompts)
        return [tta([Image.fromarray(np.ascontiguousarray(array[:, :, ::-1]))], detect)[0] for array in arrays]

    def predict(self, images: Sequence, caption: Caption, custom_entity: Optional[Sequence[dict]] = None,
                threshold: Union[None, float, Sequence[float]] = None, batch_size: int = 4) -> List[BoxList]:
        """Detections above `threshold` (default `confidence_threshold`) per image, sorted by score.

        `images`: list of images (BGR arrays, see `to_bgr_uint8`, or file paths); `caption`: one caption or
        list of class names for all images. Equal to calling `inference` on each image alone.
        """
        threshold = self.confidence_threshold if threshold is None else threshold
        return [self._threshold(p, threshold) for p in self.predict_all(images, caption, custom_entity, batch_size)]

    def compute_prediction(self, original_image, original_caption: Caption,
                           custom_entity: Optional[Sequence[dict]] = None) -> BoxList:
        """All detections (before thresholding) for one image, in original-image coordinates."""
        return self.predict_all([original_image], original_caption, custom_entity, batch_size=1)[0]

    def _threshold(self, predictions: BoxList, threshold: Union[float, Sequence[float]]) -> BoxList:
        scores = predictions.get_field("scores")
        labels = predictions.get_field("labels")
        if isinstance(threshold, (int, float)) or len(threshold) == 1:
            value = float(threshold if isinstance(threshold, (int, float)) else threshold[0])
            thresh = torch.full_like(scores, value)
        else:
            thresh = torch.as_tensor(threshold, dtype=scores.dtype)[labels - 1]
        kept = predictions[torch.nonzero(scores > thresh).squeeze(1)]
        order = torch.sort(kept.get_field("scores"), descending=True, stable=True).indices
        return kept[order]

    def inference(self, original_image, original_caption: Caption,
                  custom_entity: Optional[Sequence[dict]] = None) -> BoxList:
        """`compute_prediction` followed by the confidence threshold, sorted by score."""
        return self._threshold(self.compute_prediction(original_image, original_caption, custom_entity),
                               self.confidence_threshold)

    def label_names(self, predictions: BoxList) -> List[str]:
        """The phrase / class name of each detection of the last call ("object" for unknown labels)."""
        return [self.entities[i - 1] if 0 < i <= len(self.entities) else "object"
                for i in predictions.get_field("labels").tolist()]

    def detections_dict(self, predictions: BoxList) -> Dict[str, object]:
        """Detections of the last call as plain values: `boxes` (K, 4) xyxy, `scores` (K,), `labels` (K,) int64
        1-based, `phrases` (the phrase / class name of each label) — the shape of `glip.api.predict`'s results."""
        boxes = predictions.convert("xyxy").bbox
        return {"boxes": boxes, "scores": predictions.get_field("scores"), "labels": predictions.get_field("labels"),
                "phrases": self.label_names(predictions)}

    def run_on_web_image(self, original_image, original_caption: Caption, thresh: float = 0.5,
                         custom_entity: Optional[Sequence[dict]] = None):
        """(image with the detections above `thresh` drawn, as BGR uint8, those detections) — the reference API."""
        from glip.utils.visualize import draw_detections

        image = to_bgr_uint8(original_image)
        predictions = self._threshold(self.compute_prediction(image, original_caption, custom_entity), thresh)
        drawn = draw_detections(image[:, :, ::-1], predictions.bbox, predictions.get_field("labels"),
                                predictions.get_field("scores"), self.label_names(predictions))
        return np.asarray(drawn)[:, :, ::-1].copy(), predictions
