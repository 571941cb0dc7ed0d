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
