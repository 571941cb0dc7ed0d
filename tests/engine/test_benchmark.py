"""glip.engine.benchmark: a model built from a config, timed per stage with the COCO prompt."""
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
