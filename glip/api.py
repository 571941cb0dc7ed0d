"""A three-call inference API in the shape of GroundingDINO's and Hugging Face's zero-shot detection:

    import glip
    model = glip.load_model("configs/pretrain/glip_Swin_T_O365_GoldG.yaml",
                            "hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth")
    result = glip.predict(model, "street.jpg", ["person", "bicycle"], threshold=0.5)
    result["boxes"], result["scores"], result["labels"], result["phrases"]
    glip.annotate("street.jpg", result).save("street_boxes.png")

`load_model` returns the package's predictor (`glip.engine.predictor.GLIPDemo`), so batching, long class lists
split into prompts, and phrase extraction for free captions all come from there. A result is a dict per image:
`boxes` (K, 4) float xyxy in original-image pixels, `scores` (K,) descending, `labels` (K,) int64 1-based (the
index of the class name / phrase), `phrases` (K strings, the phrase of each label). `to_supervision` turns one
into a `supervision.Detections` when that library is installed.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from glip.engine.predictor import Caption, GLIPDemo, load_image, to_bgr_uint8

logger = logging.getLogger(__name__)

Detections = Dict[str, object]


def load_model(config_file: Union[str, Path], weights: Optional[str] = None, device: Optional[str] = None,
               opts: Sequence[str] = (), threshold: float = 0.5, min_image_size: Optional[int] = 800) -> GLIPDemo:
    """A ready predictor from a config file and a weight file (path, `hf://OWNER/REPO/FILE` or URL).

    `weights` None uses the config's MODEL.WEIGHT (none: the constructor's initialisation, with a warning);
    `device` None: the config's, or CPU when CUDA is not available; `opts`: KEY VALUE config overrides;
    `threshold`: the default score threshold of `predict`; `min_image_size`: the short side images are resized
    to (None: as given).
    """
    from glip.engine.preflight import check_weight
    from glip.utils import cli

    cfg = cli.merge_config(cli.base_config(), str(config_file), list(opts))
    if weights:
        cfg.MODEL.WEIGHT = str(weights)
    if device:
        cfg.MODEL.DEVICE = device
    cli.settle_device(cfg)  # cuda without a GPU: the CPU, with a warning
    if cfg.MODEL.WEIGHT:
        cfg.MODEL.WEIGHT = check_weight(cfg, config_name=str(config_file))  # resolved (hub cache), fits the model
    else:
        logger.warning("no weights given and no MODEL.WEIGHT in %s: the model keeps its initialisation", config_file)
    cfg.freeze()
    return GLIPDemo(cfg, confidence_threshold=threshold, min_image_size=min_image_size)


def _as_bgr(image) -> np.ndarray:
    """A file path, a PIL image (RGB) or a BGR array (OpenCV order, as `GLIPDemo` takes it) -> BGR uint8."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    return to_bgr_uint8(image)


def predict(model: GLIPDemo, images, caption: Caption, threshold: Optional[float] = None,
            batch_size: int = 4) -> Union[Detections, List[Detections]]:
    """Detections above `threshold` (default: the model's) for one image or a list of images.

    `images`: a file path, PIL image or BGR array, or a list of them; `caption`: a list of class names or a
    caption (its phrases are found as `GLIPDemo` does). Returns one result dict, or a list for a list.
    """
    single = not isinstance(images, (list, tuple))
    arrays = [_as_bgr(image) for image in ([images] if single else images)]
    predictions = model.predict(arrays, caption, threshold=threshold, batch_size=batch_size)
    results = [model.detections_dict(p) for p in predictions]
    return results[0] if single else results


def annotate(image, detections: Detections, line_width: Optional[int] = None, font_size: Optional[int] = None):
    """The image (path, PIL image or BGR array) with the boxes and "phrase: score" drawn, as a PIL RGB image."""
    from glip.utils.visualize import draw_detections

    rgb = _as_bgr(image)[:, :, ::-1]
    return draw_detections(rgb, detections["boxes"], detections["labels"], detections["scores"],
                           detections.get("phrases"), line_width=line_width, font_size=font_size)


def to_supervision(detections: Detections):
    """The result as `supervision.Detections` (class_id = label - 1, data["class_name"] = phrases)."""
    try:
        import supervision as sv
    except ImportError as err:
        raise ImportError("to_supervision needs the `supervision` package (pip install supervision)") from err
    labels = np.asarray(detections["labels"], dtype=np.int64).reshape(-1)
    names = detections.get("phrases") or [str(label) for label in labels.tolist()]
    return sv.Detections(xyxy=np.asarray(detections["boxes"], dtype=np.float32).reshape(-1, 4),
                         confidence=np.asarray(detections["scores"], dtype=np.float32),
                         class_id=labels - 1,
                         data={"class_name": np.asarray(names, dtype=object)})
