"""Test-time augmentation (TEST.USE_MULTISCALE), as the reference's `im_detect_bbox_aug`.

Each image (an untransformed PIL image) is run once per view: every scale of TEST.SCALES (short side, long side
capped at TEST.MAX_SIZE), and, with TEST.FLIP, every scale again mirrored. A view's detections are mirrored back
(`BoxList.transpose`), filtered by the scale's area range when TEST.RANGES has one range per scale (boxes with
min^2 < (w + 1)(h + 1) < max^2 in that view's pixels), and resized to the original image. All views of an image
are then merged per class (`glip.engine.tta_merge.merge_detections`: TEST.TH, TEST.SPECIAL_NMS,
TEST.PRE_NMS_TOP_N, TEST.SELECT_CLASSES / TEST.NUM_CLASSES). The result is in original-image pixels.

Views are transformed as the test transforms do (`glip.data.transforms`: resize, flip, to tensor, INPUT.FORMAT /
TO_BGR255 normalisation); how a view's images are batched and which prompts run is the caller's `detect`.
"""
import copy
import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torchvision.transforms import functional as F

from glip.data.transforms import Compose, Normalize, Resize, ToTensor
from glip.engine.tta_merge import NMS_TYPES, keep_by_area, merge_detections
from glip.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList

logger = logging.getLogger(__name__)

# detect(list of (3, h, w) view tensors) -> per tensor a BoxList (xyxy, `scores`, `labels`) in that view's pixels
Detector = Callable[[List[torch.Tensor]], List[BoxList]]


def _mirror(image, target=None):
    """Mirror a PIL image left-right (a view's flip; there is no target)."""
    return F.hflip(image), target


@dataclass(frozen=True)
class View:
    """One augmentation: short side `scale` (long side <= max_size), mirrored or not, optional area range."""

    scale: int
    hflip: bool
    keep_range: Optional[Tuple[float, float]] = None


class TestTimeAugmentation:
    """Multi-scale (+ flip) detection merged per class; see the module docstring.

    Args:
        scales, max_size, flip, ranges: TEST.SCALES, TEST.MAX_SIZE, TEST.FLIP, TEST.RANGES (used only when it has
            one (min, max) per scale).
        classes: the labels kept and merged (TEST.SELECT_CLASSES, else 1 .. TEST.NUM_CLASSES - 1).
        nms_thresh, nms_type, max_detections: TEST.TH, TEST.SPECIAL_NMS, TEST.PRE_NMS_TOP_N.
        soft_vote_min_score: MODEL.RETINANET.INFERENCE_TH ("soft-vote" keeps decayed boxes at least this score).
        pixel_mean, pixel_std, input_format: the normalisation of the test transforms.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, scales: Sequence[int], max_size: int, flip: bool = True,
                 ranges: Optional[Sequence[Tuple[float, float]]] = None, classes: Sequence[int] = range(1, 81),
                 nms_thresh: float = 0.6, nms_type: str = "none", max_detections: int = 1000,
                 soft_vote_min_score: float = 0.05, pixel_mean=(102.9801, 115.9465, 122.7717),
                 pixel_std=(1.0, 1.0, 1.0), input_format: str = "bgr255"):
        if nms_type not in NMS_TYPES:
            raise ValueError("TEST.SPECIAL_NMS must be one of {}, got {!r}".format(NMS_TYPES, nms_type))
        if not scales:
            raise ValueError("TEST.SCALES is empty: test-time augmentation needs at least one scale")
        self.scales = [int(s) for s in scales]
        self.max_size = int(max_size)
        self.flip = bool(flip)
        self.ranges = [tuple(r) for r in ranges] if ranges is not None and len(ranges) == len(scales) else None
        self.classes = [int(c) for c in classes]
        self.nms_thresh = float(nms_thresh)
        self.nms_type = nms_type
        self.max_detections = int(max_detections)
        self.soft_vote_min_score = float(soft_vote_min_score)
        self.normalize = Normalize(pixel_mean, pixel_std, format=input_format)

    def with_classes(self, classes: Sequence[int]) -> "TestTimeAugmentation":
        """A copy merging the labels `classes` (e.g. the phrases of a demo prompt) instead."""
        out = copy.copy(self)
        out.classes = [int(c) for c in classes]
        return out

    def views(self) -> List[View]:
        """Per scale: the plain view, then the mirrored one (TEST.FLIP)."""
        out = []
        for k, scale in enumerate(self.scales):
            keep_range = self.ranges[k] if self.ranges is not None else None
            out.append(View(scale, False, keep_range))
            if self.flip:
                out.append(View(scale, True, keep_range))
        return out

    def transform(self, image, view: View) -> torch.Tensor:
        """PIL image -> the normalised (3, h, w) tensor of `view`."""
        steps = [Resize(view.scale, self.max_size)]
        if view.hflip:
            steps.append(_mirror)
        return Compose(steps + [ToTensor(), self.normalize])(image)

    def detect_views(self, images: Sequence, detect: Detector) -> List[List[BoxList]]:
        """Per image, the detections of every view (un-mirrored, range-filtered, in original-image pixels)."""
        per_image: List[List[BoxList]] = [[] for _ in images]
        for view in self.views():
            outputs = detect([self.transform(image, view) for image in images])
            for i, output in enumerate(outputs):
                if view.hflip:
                    output = output.transpose(FLIP_LEFT_RIGHT)
                if view.keep_range is not None:
                    output = keep_by_area(output, *view.keep_range)
                per_image[i].append(output.resize(images[i].size))
        return per_image

    def merge(self, views: List[BoxList]) -> BoxList:
        """One image's view detections -> the merged detections (see `merge_detections`)."""
        views = [v.convert("xyxy") for v in views]
        merged = BoxList(torch.cat([v.bbox for v in views]), views[0].size, mode="xyxy")
        merged.add_field("scores", torch.cat([v.get_field("scores") for v in views]))
        merged.add_field("labels", torch.cat([v.get_field("labels") for v in views]))
        return merge_detections(merged, self.classes, self.nms_thresh, self.nms_type, self.max_detections,
                                self.soft_vote_min_score)

    def __call__(self, images: Sequence, detect: Detector) -> List[BoxList]:
        """PIL `images` -> per image the merged detections (xyxy, `scores`, `labels`, original pixels)."""
        return [self.merge(views) for views in self.detect_views(images, detect)]


def build_tta(cfg) -> TestTimeAugmentation:
    """`TestTimeAugmentation` from the TEST.* keys and the test normalisation (INPUT.*)."""
    test = cfg.TEST
    classes = list(test.SELECT_CLASSES) if len(test.SELECT_CLASSES) else list(range(1, test.NUM_CLASSES))
    input_format = cfg.INPUT.FORMAT if cfg.INPUT.FORMAT != "" else ("bgr255" if cfg.INPUT.TO_BGR255 else "rgb")
    return TestTimeAugmentation(
        scales=test.SCALES, max_size=test.MAX_SIZE, flip=test.FLIP, ranges=test.RANGES, classes=classes,
        nms_thresh=test.TH, nms_type=test.SPECIAL_NMS, max_detections=test.PRE_NMS_TOP_N,
        soft_vote_min_score=cfg.MODEL.RETINANET.INFERENCE_TH, pixel_mean=cfg.INPUT.PIXEL_MEAN,
        pixel_std=cfg.INPUT.PIXEL_STD, input_format=input_format)
