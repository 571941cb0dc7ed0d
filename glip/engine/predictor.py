"""`GLIPDemo`: the reference's inference API (one image + a caption or class names -> boxes).

Images are BGR uint8 arrays (H, W, 3), as OpenCV loads them; the returned BoxList is in original-image pixels
with fields `scores` and `labels` (1-based index of the phrase/class).
"""
import logging
import re
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF

from glip.data.positive_map import (create_positive_map, create_positive_map_label_to_token_from_positive_map)
from glip.structures.bounding_box import BoxList
from glip.structures.image_list import to_image_list

logger = logging.getLogger(__name__)

Caption = Union[str, Sequence[str]]


class GLIPDemo:
    """Build (and load) a GLIP model from a config and run it on single images.

    Args:
        cfg: a merged config (`glip.config.cfg` + yaml); `cfg.MODEL.WEIGHT` is loaded when `load_model`.
        confidence_threshold: score threshold of `inference` (a float, or one per label).
        min_image_size: resize the short side to this (no resizing when None), as the reference demo does.
        load_model: build the model and load `cfg.MODEL.WEIGHT`; False builds it without loading weights.
    """

    def __init__(self, cfg, confidence_threshold: Union[float, Sequence[float]] = 0.7,
                 min_image_size: Optional[int] = None, load_model: bool = True):
        from glip.engine.weights import load_weights
        from glip.modeling.detector import build_detection_model

        self.cfg = cfg.clone()
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.model = build_detection_model(self.cfg)
        self.model.eval()
        self.model.to(self.device)
        if load_model and cfg.MODEL.WEIGHT:
            load_weights(self.model, cfg.MODEL.WEIGHT)
        self.tokenizer = self.model.tokenizer
        self.min_image_size = min_image_size
        self.confidence_threshold = confidence_threshold
        self.entities: List[str] = []
        self.positive_map_label_to_token = {}

    def transform(self, image_bgr: np.ndarray) -> torch.Tensor:
        """(H, W, 3) BGR uint8 -> (3, h, w) float, BGR, 0-255 scale, normalised with PIXEL_MEAN/STD."""
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            shape = getattr(image_bgr, "shape", type(image_bgr).__name__)
            raise ValueError(f"expected an (H, W, 3) BGR uint8 image array, got {shape}")
        image = TF.to_pil_image(np.ascontiguousarray(image_bgr))
        if self.min_image_size is not None:
            image = TF.resize(image, self.min_image_size)
        tensor = TF.to_tensor(image)
        tensor = tensor * 255 if self.cfg.INPUT.TO_BGR255 else tensor[[2, 1, 0]]
        return TF.normalize(tensor, mean=list(self.cfg.INPUT.PIXEL_MEAN), std=list(self.cfg.INPUT.PIXEL_STD))

    def prompt(self, caption: Caption, custom_entity: Optional[Sequence[dict]] = None):
        """(caption string, per-phrase char spans, phrase names) for a caption or a list of class names."""
        if isinstance(caption, (list, tuple)):
            names = [str(n) for n in caption]
            if not names or any(not n.strip() for n in names):
                raise ValueError(f"class names must be non-empty strings, got {names!r}")
            text, spans = "", []
            for name in names:
                spans.append([[len(text), len(text) + len(name)]])
                text += name + " . "
            return text, spans, names
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"the caption is empty: {caption!r}")
        if custom_entity is not None:
            spans, names = [], []
            for entity in custom_entity:
                if "char_bounds" in entity:
                    beg, end = entity["char_bounds"]
                    spans.append([[int(beg), int(end)]])
                    names.append(caption[int(beg):int(end)])
                else:
                    match = re.search(re.escape(entity["span"]), caption)
                    if match is None:
                        raise ValueError(f"phrase {entity['span']!r} not found in caption {caption!r}")
                    spans.append([[match.start(), match.end()]])
                    names.append(entity["span"])
            return caption, spans, names
        names = [p.strip() for p in caption.split(".") if p.strip()]
        spans = []
        for name in names:
            start = caption.lower().find(name.lower())
            spans.append([[start, start + len(name)]])
        return caption, spans, names

    @torch.no_grad()
    def compute_prediction(self, original_image: np.ndarray, original_caption: Caption,
                           custom_entity: Optional[Sequence[dict]] = None) -> BoxList:
        """All detections (before thresholding) for one BGR image, in original-image coordinates."""
        image = self.transform(original_image)
        image_list = to_image_list(image, self.cfg.DATALOADER.SIZE_DIVISIBILITY).to(self.device)
        caption, spans, names = self.prompt(original_caption, custom_entity)
        tokenized = self.tokenizer([caption], return_tensors="pt")
        positive_map = create_positive_map(tokenized, spans)
        self.entities = names
        self.positive_map_label_to_token = create_positive_map_label_to_token_from_positive_map(positive_map, plus=1)
        predictions = self.model(image_list, captions=[caption], positive_map=self.positive_map_label_to_token)
        prediction = predictions[0].to(torch.device("cpu"))
        height, width = original_image.shape[:2]
        return prediction.resize((width, height))

    def _threshold(self, predictions: BoxList, threshold: Union[float, Sequence[float]]) -> BoxList:
        scores = predictions.get_field("scores")
        labels = predictions.get_field("labels")
        if isinstance(threshold, (int, float)) or len(threshold) == 1:
            value = float(threshold if isinstance(threshold, (int, float)) else threshold[0])
            thresh = torch.full_like(scores, value)
        else:
            thresh = torch.as_tensor(threshold, dtype=scores.dtype)[labels - 1]
        kept = predictions[torch.nonzero(scores > thresh).squeeze(1)]
        order = kept.get_field("scores").sort(0, descending=True)[1]
        return kept[order]

    def inference(self, original_image: np.ndarray, original_caption: Caption,
                  custom_entity: Optional[Sequence[dict]] = None) -> BoxList:
        """`compute_prediction` followed by the confidence threshold, sorted by score."""
        return self._threshold(self.compute_prediction(original_image, original_caption, custom_entity),
                               self.confidence_threshold)
