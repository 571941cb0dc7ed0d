"""The GLIP-T model of the goldens: the reference's test-time config, filled with the golden weight rule."""
import functools

import torch

from helpers import REFERENCE
from helpers.weights import fill_value


def golden_config():
    """Defaults + the reference's full merged GLIP-T test config (config_glip_tiny_test.yaml)."""
    from glip.config import cfg

    c = cfg.clone()
    c.merge_from_file(str(REFERENCE / "config_glip_tiny_test.yaml"))
    return c


def fill_model_(model: torch.nn.Module, salt: str = "") -> torch.nn.Module:
    """Fill every fillable tensor of a full GLIP model in place with the golden rule."""
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            value = fill_value(key, tensor.shape, tensor.dtype, salt)
            if value is not None:
                tensor.copy_(value)
    return model


@functools.lru_cache(maxsize=1)
def golden_glip_tiny():
    """The filled GLIP-T model in eval mode (built once per test session)."""
    from glip.modeling.detector import build_detection_model

    model = build_detection_model(golden_config())
    return fill_model_(model).eval()


def match_detections(ours, golden, box_tol=1e-2, score_tol=1e-4):
    """Golden detections without a counterpart in ours (same label, box within box_tol, score within score_tol).

    `ours`/`golden`: dicts with `boxes` (N, 4), `scores` (N), `labels` (N). Returns the unmatched golden indices.
    """
    unmatched = []
    used = torch.zeros(len(ours["scores"]), dtype=torch.bool)
    for i in range(len(golden["scores"])):
        ok = ((ours["labels"] == golden["labels"][i])
              & ((ours["boxes"] - golden["boxes"][i]).abs().amax(dim=1) <= box_tol)
              & ((ours["scores"] - golden["scores"][i]).abs() <= score_tol) & ~used)
        idx = torch.nonzero(ok).flatten()
        if len(idx):
            used[idx[0]] = True
        else:
            unmatched.append(i)
    return unmatched


def detect_golden(model, golden, size_key, caption_key, device="cpu"):
    """Detections of `model` on one golden image/caption ((detections BoxList on the CPU, golden detections))."""
    from glip.data.transforms import Normalize
    from glip.structures.image_list import to_image_list

    size = golden[size_key]
    cap = size["captions"][caption_key]
    if "input_tensor" in size:
        images = to_image_list(size["input_tensor"][0], 32)
        images.image_sizes = [tuple(size["image_size_hw"])]
    else:
        rgb = size["resized_rgb_uint8"].permute(2, 0, 1).float() / 255.0
        normalize = Normalize([103.530, 116.280, 123.675], [57.375, 57.120, 58.395], format="bgr255")
        images = to_image_list([normalize(rgb)[0]], 32)
    images = images.to(device)
    with torch.no_grad():
        det = model(images, captions=[cap["caption"]], positive_map=cap["positive_map_label_to_token"])[0]
    return det.to("cpu"), cap["detections"]


def check_detections(det, ref):
    """Assert that `det` reproduces the golden detections `ref` (near-ties at the 100-detection cut aside)."""
    ours = {"boxes": det.bbox, "scores": det.get_field("scores"), "labels": det.get_field("labels")}
    assert tuple(det.size) == tuple(ref["image_size_wh"])
    unmatched = match_detections(ours, ref)
    cut = ref["scores"].min()
    # Only near-ties at the 100-detection cut may swap (README section 9).
    assert all(abs(ref["scores"][i] - cut) < 1e-4 for i in unmatched), unmatched
    assert len(ours["scores"]) == len(ref["scores"])
    orig = det.resize(tuple(ref["orig_size_wh"]))
    matched = [i for i in range(len(ref["scores"])) if i not in unmatched]
    for i in matched:
        hit = ((orig.get_field("labels") == ref["labels"][i])
               & ((orig.bbox - ref["boxes_orig"][i]).abs().amax(dim=1) <= 1e-2))
        assert hit.any(), i


def golden_train_batch(golden):
    """(ImageList, [BoxList targets]) of the reference's training batch (train_losses.pt)."""
    from glip.data.transforms import Normalize
    from glip.structures.bounding_box import BoxList
    from glip.structures.image_list import to_image_list

    normalize = Normalize([103.530, 116.280, 123.675], [57.375, 57.120, 58.395], format="bgr255")
    images = [normalize(s["resized_rgb_uint8"].permute(2, 0, 1).float() / 255.0)[0] for s in golden["samples"]]
    images = to_image_list(images, 32)
    targets = []
    for t in golden["targets"]:
        box = BoxList(t["boxes"], t["size_wh"], mode="xyxy")
        box.add_field("labels", t["labels"])
        targets.append(box)
    return images, targets
