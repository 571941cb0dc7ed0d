"""GLIP: Grounded Language-Image Pre-training, a faithful re-implementation on current PyTorch.

The entry points, imported on first use (``import glip`` itself loads neither torch nor transformers)::

    import glip

    cfg = glip.get_config("configs/pretrain/glip_Swin_T_O365_GoldG.yaml", ["MODEL.DEVICE", "cpu"])  # frozen
    model = glip.build_detection_model(cfg)                    # the detector the config describes
    glip.load_weights(model, "MODEL/glip_tiny_model_o365_goldg.pth")
    demo = glip.GLIPDemo(cfg)                                  # image + caption -> boxes (loads MODEL.WEIGHT)
    loader = glip.make_data_loader(cfg, is_train=False)[0]     # DATASETS.TEST[0]; batches are glip.data.Batch
    result = glip.inference(model, loader, "val", device="cpu", cfg=cfg)   # an EvalResult (metrics, score)
    model = glip.train(cfg)                                    # what tools/train_net.py runs

    model = glip.load_model(config_file, "hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth")  # a GLIPDemo
    result = glip.predict(model, "street.jpg", ["person", "bicycle"])   # boxes, scores, labels, phrases
    glip.annotate("street.jpg", result).save("street_boxes.png")

The reference's module paths keep working as well (``glip.modeling.detector.build_detection_model``,
``glip.engine.predictor.GLIPDemo``, ``glip.data.make_data_loader``, ``glip.engine.inference.inference``, ...).
"""
from glip.utils.lazy import lazy_exports

__version__ = "0.1.0"

EXPORTS = {
    "get_config": "glip.config",
    "build_detection_model": "glip.modeling.detector",
    "load_weights": "glip.engine.weights",
    "Checkpointer": "glip.engine.checkpointer",
    "GLIPDemo": "glip.engine.predictor",
    "make_data_loader": "glip.data.build",
    "inference": "glip.engine.inference",
    "evaluate": "glip.evaluation",
    "EvalResult": "glip.evaluation",
    "train": "glip.engine.run",
    "run_test": "glip.engine.run",
    "load_model": "glip.api",
    "predict": "glip.api",
    "annotate": "glip.api",
    "to_supervision": "glip.api",
}

__all__ = ["__version__"] + sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
