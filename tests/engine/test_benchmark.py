"""glip.engine.benchmark: a model built from a config, timed per stage with the COCO prompt."""
import pytest

from glip.config import cfg as default_cfg
from glip.engine import benchmark
from glip.utils import profiling
from helpers.tiny import TINY_BERT_OPTS

TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", 24, "MODEL.SWINT.DEPTHS", (1, 1, 1, 1), "MODEL.SWINT.NUM_HEADS", (1, 1, 1, 1),
             "MODEL.SWINT.OUT_CHANNELS", (24, 48, 96, 192), "MODEL.DYHEAD.NUM_CONVS", 1,
             "MODEL.DYHEAD.USE_CHECKPOINT", False, "MODEL.DEVICE", "cpu"]


def test_benchmark_builds_the_config_model_and_times_its_stages():
    cfg = default_cfg.clone()
    cfg.merge_from_file("configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
    cfg.merge_from_list(TINY_OPTS + TINY_BERT_OPTS)
    result = benchmark.benchmark_model(cfg, size_hw=(64, 96), runs=1, warmup=0, threads=1, flops=False,
                                       gemm_size=32)
    assert {"backbone", "fpn", "language", "head", "postprocess"} <= set(result["stages"])
    assert result["size_hw"] == [64, 96] and result["efficiency"] is None and result["median_seconds"] > 0


def test_profiling_keeps_the_builders_importable():
    assert profiling.benchmark_model is benchmark.benchmark_model
    assert profiling.coco_prompt is benchmark.coco_prompt


def _tiny_model():
    from glip.modeling.detector import build_detection_model

    cfg = default_cfg.clone()
    cfg.merge_from_file("configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
    cfg.merge_from_list(TINY_OPTS + TINY_BERT_OPTS)
    return cfg, build_detection_model(cfg)


def test_fusion_paths_select_the_evaluation_and_agree():
    import torch

    from glip.modeling.head.fusion import BiMultiHeadAttention

    _, model = _tiny_model()
    model.eval()
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    caption, label_map = benchmark.coco_prompt(model.tokenizer)
    outputs = {}
    for path, blocked in benchmark.FUSION_PATHS.items():
        benchmark.set_fusion_path(model, path)
        attns = [m for m in model.modules() if isinstance(m, BiMultiHeadAttention)]
        assert attns and all(m.blocked_inference == blocked for m in attns)
        with torch.no_grad():
            outputs[path] = model(images, captions=[caption], positive_map=label_map)[0]
    torch.testing.assert_close(outputs["batched"].get_field("scores"), outputs["blocked"].get_field("scores"),
                               rtol=1e-4, atol=1e-5)


def test_synthetic_training_batch_maps_boxes_to_their_class_tokens():
    _, label_map = benchmark.coco_prompt()
    batch = benchmark.synthetic_training_batch(2, (64, 96), boxes_per_image=3)
    assert tuple(batch["images"].shape) == (2, 3, 64, 96) and len(batch["targets"]) == 2
    labels = [int(v) for t in batch["targets"] for v in t.get_field("labels")]
    assert batch["positive_map"].shape == (6, 256)
    for row, label in zip(batch["positive_map"], labels):
        assert sorted(row.nonzero().flatten().tolist()) == label_map[label]
        assert float(row.sum()) == pytest.approx(1.0)


def test_training_benchmark_times_the_step_and_its_stages():
    from glip.solver.build import make_optimizer

    cfg, model = _tiny_model()
    result = benchmark.benchmark_training(model, (64, 96), batch_size=1, runs=1, warmup=0, threads=1,
                                          optimizer=make_optimizer(cfg, model))
    assert result["step"] > 0 and result["images_per_second"] == pytest.approx(1 / result["step"])
    assert {"backbone", "language", "head"} <= set(result["stages"])
    for times in result["stages"].values():
        assert times["forward"] > 0 and times["backward"] >= 0
