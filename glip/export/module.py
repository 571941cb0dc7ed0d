"""`ExportableGLIP`: one image's GLIP inference with plain tensors in and out, the graph that is exported.

Inputs (what a deployment computes without this package):
    images          float32 (1, 3, H, W): the test transform's output (BGR 0-255, normalised with
                    INPUT.PIXEL_MEAN/STD), zero-padded at the bottom/right to a multiple of 32.
    input_ids       int64 (1, T): the caption tokenized by the BERT tokenizer ([CLS] ... [SEP] [PAD]...).
    attention_mask  int64 (1, T): 1 for the caption's tokens, 0 for padding.
    positive_map    float32 (L, T): row l spreads label l + 1 evenly over its tokens (the reference's
                    evaluation map; only which entries are positive matters).
Outputs:
    boxes   float32 (K, 4): xyxy in the pixels of `images`, clipped to it (clip to the unpadded size yourself).
    scores  float32 (K,), descending.
    labels  int64 (K,), 1-based rows of `positive_map`.

The PyTorch model gives the same detections for an image that needs no padding when the caption is padded as
the model pads it (MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN with PAD_MAX); shorter `T` changes the numbers only at
float rounding level.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from glip.export.postprocess import FixedSizeATSSPostProcessor

INPUT_NAMES = ("images", "input_ids", "attention_mask", "positive_map")
OUTPUT_NAMES = ("boxes", "scores", "labels")


def check_exportable(model: nn.Module) -> None:
    """Refuse, by name, the model settings the exported graph does not implement."""
    head = model.rpn.head
    if not head.use_dot_product:
        raise NotImplementedError("export needs the dot-product grounding head "
                                  "(MODEL.DYHEAD.FUSE_CONFIG.USE_DOT_PRODUCT_TOKEN_LOSS)")
    if model.one_hot_classes or model.mask_special:
        raise NotImplementedError("export does not implement DATASETS.ONE_HOT or "
                                  "MODEL.LANGUAGE_BACKBONE.MASK_SPECIAL text masks")
    if getattr(head, "trim_padded_tokens", False):
        raise NotImplementedError("export needs the head's trim_padded_tokens speed option off "
                                  "(its length is taken from the data)")
    if not getattr(model.language_backbone.body, "keep_padding", True):
        raise NotImplementedError("export needs the language backbone to keep the padded tokens")


class ExportableGLIP(nn.Module):
    """Wraps a built `GeneralizedVLRCNN` (eval mode; shares its modules) for export; see the module docstring."""

    def __init__(self, model: nn.Module):
        super().__init__()
        check_exportable(model)
        self.model = model.eval()
        self.postprocessor = FixedSizeATSSPostProcessor.like(model.rpn.box_selector_test)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positive_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model, rpn = self.model, self.model.rpn
        language = dict(model.language_backbone(input_ids, attention_mask))
        language["masks"] = attention_mask
        language["mlm_labels"] = None
        language = rpn.apply_prompt_offset(language)
        features = model.backbone(images)
        head = rpn.head(features, language, language["embedded"])
        anchors = rpn.anchor_generator.grid_anchors([f.shape[-2:] for f in features])
        boxes, scores, labels = self.postprocessor(head["box_regression"], head["centerness"], anchors,
                                                   head["dot_product_logits"], positive_map, images.shape[-2:])
        return boxes, scores, labels


def padded_example_size(window_size: int = 7, near: int = 320, stages: int = 4) -> Tuple[int, int]:
    """An (H, W), multiples of 32 around `near`, for which every Swin stage's map (H/4, H/8, ...) needs window
    padding, so that tracing sees the padding code on every stage (H != W, so the two are not confused)."""
    def pads_everywhere(side):
        return all((side // 2 ** (2 + i)) % window_size for i in range(stages))

    sides = [s for s in range(near, near + 32 * 64, 32) if pads_everywhere(s)]
    return sides[0], sides[1]


def example_inputs(model: nn.Module, size: Optional[Sequence[int]] = None,
                   caption: str = "a person. a dog.", spans=((2, 8), (12, 15)), seed: int = 0):
    """Inputs to trace: a random image of `size` (default `padded_example_size`), a caption tokenized as the
    model tokenizes it and the positive map of its `spans` (two labels: one-sized axes would be fixed)."""
    from glip.data.positive_map import create_positive_map

    window = next((m.window_size for m in model.backbone.modules() if isinstance(getattr(m, "window_size", None), int)),
                  7)
    height, width = size if size is not None else padded_example_size(window)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 3, int(height), int(width), generator=generator)
    tokens = model.tokenizer([caption], max_length=model.max_query_len, truncation=True, return_tensors="pt",
                             padding="max_length" if model.pad_max else "longest")
    positive_map = create_positive_map(tokens, [[span] for span in spans], max_len=tokens["input_ids"].shape[1])
    return images, tokens["input_ids"], tokens["attention_mask"], positive_map
