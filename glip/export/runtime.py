"""Run an exported GLIP ONNX file with onnxruntime: no PyTorch and nothing else of this package is imported.

Needs numpy, Pillow, onnxruntime and a BERT tokenizer (`transformers`); this file can be copied on its own.

    detector = OnnxGLIP("glip_tiny.onnx")                      # settings from the file's metadata
    result = detector.predict("photo.jpg", ["person", "dog"], threshold=0.5)
    result["boxes"], result["scores"], result["labels"], result["phrases"]   # original-image pixels

The input side mirrors the model's test transform: resize (short side `min_size`, long side at most `max_size`,
PIL bilinear), BGR 0-255, normalise, zero-pad to a multiple of `size_divisibility`; the caption is tokenized
and padded to `max_query_len` as the model pads it, and `positive_map` row l marks the tokens of phrase l + 1.
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

CATEGORY_SEPARATOR = " . "
METADATA_KEY = "glip"
DEFAULT_SETTINGS = {
    "pixel_mean": [103.53, 116.28, 123.675], "pixel_std": [57.375, 57.12, 58.395], "to_bgr255": True,
    "min_size": 800, "max_size": 1333, "size_divisibility": 32, "max_query_len": 256,
    "tokenizer": "bert-base-uncased",
}


def resized_size(width: int, height: int, min_size: Optional[int], max_size: Optional[int]) -> Tuple[int, int]:
    """(width, height) after the test transform's resize (short side `min_size`, long side <= `max_size`)."""
    if not min_size:
        return width, height
    size = min_size
    if max_size:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return width, height
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def preprocess(image, settings: dict) -> Tuple[np.ndarray, Tuple[int, int]]:
    """An RGB image (PIL image, (H, W, 3) uint8 array or file path) -> `images` (1, 3, H', W') float32 and the
    resized (height, width) before padding."""
    from PIL import Image

    if isinstance(image, str):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")
    else:
        image = image.convert("RGB")
    size = resized_size(image.width, image.height, settings["min_size"], settings["max_size"])
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32)
    array = array[:, :, ::-1] if settings["to_bgr255"] else array / 255.0
    array = (array - np.asarray(settings["pixel_mean"], np.float32)) / np.asarray(settings["pixel_std"], np.float32)
    height, width = array.shape[:2]
    div = int(settings["size_divisibility"])
    padded_h, padded_w = (-(-height // div) * div, -(-width // div) * div) if div > 0 else (height, width)
    images = np.zeros((1, 3, padded_h, padded_w), np.float32)
    images[0, :, :height, :width] = array.transpose(2, 0, 1)
    return images, (height, width)


def caption_and_spans(prompt: Union[str, Sequence[str]], phrases: Optional[Sequence[str]] = None):
    """(caption, [(beg, end)] per label, label names) for a list of class names, or a caption with `phrases`
    (substrings, first occurrence), or a caption alone ("a. b. c" lists split on ".", else one phrase)."""
    if not isinstance(prompt, str):
        caption, spans = "", []
        for name in prompt:
            spans.append((len(caption), len(caption) + len(name)))
            caption += name + CATEGORY_SEPARATOR
        return caption, spans, list(prompt)
    if phrases is None:
        parts = [p.strip() for p in prompt.split(".") if p.strip()]
        phrases = parts if len(parts) > 1 else [prompt.strip()]
    spans = []
    for phrase in phrases:
        beg = prompt.find(phrase)
        if beg < 0 or not phrase:
            raise ValueError(f"phrase {phrase!r} is not in caption {prompt!r}")
        spans.append((beg, beg + len(phrase)))
    return prompt, spans, list(phrases)


def text_inputs(tokenizer, caption: str, spans: Sequence[Tuple[int, int]], max_len: int):
    """`input_ids`, `attention_mask` (1, max_len) int64 and `positive_map` (L, max_len) float32."""
    tokens = tokenizer([caption], max_length=max_len, padding="max_length", truncation=True,
                       return_offsets_mapping=True, return_tensors="np")
    offsets = tokens["offset_mapping"][0]
    positive = np.zeros((len(spans), max_len), np.float32)
    for row, (beg, end) in enumerate(spans):
        covered = [t for t, (s, e) in enumerate(offsets) if e > s and s < end and e > beg]
        if not covered:
            raise ValueError(f"phrase {caption[beg:end]!r} covers no token of the caption")
        positive[row, covered[0]: covered[-1] + 1] = 1.0
    positive /= positive.sum(1, keepdims=True)
    return tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64), positive


def to_original_pixels(boxes: np.ndarray, resized_hw: Tuple[int, int], original_hw: Tuple[int, int]) -> np.ndarray:
    """(K, 4) xyxy boxes in network-input pixels -> clipped to the unpadded resized image (x <= w - 1, as the
    model clips) and scaled to the original image, as the predictor returns them."""
    (resized_h, resized_w), (height, width) = resized_hw, original_hw
    boxes = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, resized_w - 1) * (width / resized_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, resized_h - 1) * (height / resized_h)
    return boxes


class OnnxGLIP:
    """An exported GLIP file in an onnxruntime session (CPU unless `providers` says otherwise)."""

    def __init__(self, path: str, providers: Optional[List[str]] = None, settings: Optional[dict] = None,
                 tokenizer=None, threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=providers or ["CPUExecutionProvider"])
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.settings = {**DEFAULT_SETTINGS, **(json.loads(stored) if stored else {}), **(settings or {})}
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.settings["tokenizer"])
        self.tokenizer = tokenizer

    def run(self, images: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray,
            positive_map: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph itself: `boxes` (K, 4) in `images` pixels, `scores` (K,), `labels` (K,) 1-based."""
        boxes, scores, labels = self.session.run(None, {"images": images, "input_ids": input_ids,
                                                        "attention_mask": attention_mask,
                                                        "positive_map": positive_map})
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def predict(self, image, prompt: Union[str, Sequence[str]], threshold: float = 0.5,
                phrases: Optional[Sequence[str]] = None) -> dict:
        """Detections scoring above `threshold` in original-image pixels, with each label's phrase."""
        from PIL import Image

        if isinstance(image, str):
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        width, height = image.size if not isinstance(image, np.ndarray) else image.shape[1::-1]
        images, (resized_h, resized_w) = preprocess(image, self.settings)
        caption, spans, names = caption_and_spans(prompt, phrases)
        out = self.run(images, *text_inputs(self.tokenizer, caption, spans, int(self.settings["max_query_len"])))
        keep = out["scores"] > threshold
        boxes = to_original_pixels(out["boxes"][keep], (resized_h, resized_w), (height, width))
        labels = out["labels"][keep]
        return {"boxes": boxes, "scores": out["scores"][keep], "labels": labels,
                "phrases": [names[i - 1] for i in labels.tolist()]}
