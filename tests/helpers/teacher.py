"""A small random-weight GLIP teacher for the pseudo-labelling tests: the quickstart model (configs/quickstart)
at 64-96 pixel inputs, saved as a config yaml and a checkpoint as a trained model would be."""
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart" / "glip_tiny_shapes.yaml"


def write_teacher(folder: Path, seed: int = 0, extra=None):
    """``(config path, weight path)`` of a randomly initialised quickstart GLIP scoring every anchor (no
    candidate threshold), at most 5 detections per image."""
    from glip.config import cfg as default_cfg
    from glip.modeling.detector import build_detection_model

    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(QUICKSTART.read_text())
    data["MODEL"]["LANGUAGE_BACKBONE"]["MODEL_TYPE"] = str(REPO / "glip" / "assets" / "bert-tiny-uncased")
    data["MODEL"]["ATSS"] = {"DETECTIONS_PER_IMG": 5, "INFERENCE_TH": 0.0, "PRE_NMS_TOP_N": 50}
    data["INPUT"].update({"MIN_SIZE_TEST": 64, "MAX_SIZE_TEST": 96, "MIN_SIZE_TRAIN": 64, "MAX_SIZE_TRAIN": 96})
    data["DATASETS"] = {"TRAIN": [], "TEST": [], "REGISTER": {}}
    for section, values in (extra or {}).items():
        data.setdefault(section, {}).update(values)
    config = folder / "teacher.yaml"
    config.write_text(yaml.safe_dump(data))
    cfg = default_cfg.clone()
    cfg.merge_from_file(str(config))
    torch.manual_seed(seed)
    model = build_detection_model(cfg)
    weight = folder / "teacher.pth"
    torch.save({"model": model.state_dict()}, weight)
    return config, weight
