"""Benchmark of a GLIP model built from a config: `benchmark_model(cfg, size_hw, runs, warmup, threads)` builds the
model (or takes one) and the 80-class COCO prompt, then times and counts it with the tools of
`glip.utils.profiling` (stage timers, counted FLOPs, GEMM rate, peak RSS; see that module for the figures).

It lives in the engine because it builds a model and a prompt (modeling and data); `glip.utils.profiling`, below
the model code, only measures modules it is given.
"""
import statistics
import time
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from glip.data.positive_map import create_queries_and_maps
from glip.modeling.detector import build_detection_model
from glip.utils.profiling import (COCO_CLASSES, StageTimer, _stage_medians, count_flops, gemm_gflops, model_stages,
                                  peak_rss_mb)


def coco_prompt(tokenizer=None) -> Tuple[str, Dict[int, List[int]]]:
    """The 80-class COCO detection prompt `person. bicycle. ... toothbrush` and its label -> token indices map."""
    return create_queries_and_maps(list(range(1, len(COCO_CLASSES) + 1)), list(COCO_CLASSES), tokenizer)


def benchmark_model(cfg=None, size_hw: Tuple[int, int] = (800, 1216), runs: int = 3, warmup: int = 1,
                    threads: int = 2, batch_size: int = 1, model: Optional[nn.Module] = None,
                    caption: Optional[str] = None, positive_map: Optional[Dict[int, List[int]]] = None,
                    flops: bool = True, gemm_size: int = 2048, seed: int = 0) -> dict:
    """Median eval forward time of a GLIP model on a random (batch_size, 3, H, W) input with one prompt per image.

    Args:
        cfg: yacs config to build the model from (ignored when `model` is given); the model keeps its
            constructor initialisation unless cfg.MODEL.WEIGHT is loaded by the caller beforehand.
        size_hw: network input (H, W) (e.g. 800x1216, already padded to /32).
        runs, warmup: timed and untimed forwards.
        threads: torch intra-op threads for the whole benchmark.
        caption, positive_map: prompt (default the 80-class COCO prompt and its label -> tokens map).
        flops: count FLOPs (one extra forward under FlopCounterMode).
        gemm_size: matrix size of the GEMM rate measurement, taken right before each timed forward so that
            both see the same machine load.
    Returns a dict: `median_seconds` (per forward), `per_image_seconds`, `seconds` (all runs), `stages`
    {name: median seconds}, `gflop` (per forward, reference formulation), `executed_gflop`, `stage_gflop`,
    `gemm_gflops` (median), `efficiency`, `peak_rss_mb` (before the FLOP count), and the settings
    (`size_hw`, `batch_size`, `threads`, `runs`, `warmup`).
    """
    torch.set_num_threads(threads)
    if model is None:
        model = build_detection_model(cfg)
    model.eval()
    if caption is None:
        caption, default_map = coco_prompt(getattr(model, "tokenizer", None))
        positive_map = default_map if positive_map is None else positive_map
    height, width = size_hw
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=gen)
    captions = [caption] * batch_size
    stages = model_stages(model)

    def run():
        return model(images, captions=captions, positive_map=positive_map)

    with torch.no_grad():
        for _ in range(warmup):
            run()
        seconds, samples, rates = [], [], []
        for _ in range(runs):
            rates.append(gemm_gflops(gemm_size, runs=1))
            with StageTimer(stages) as timer:
                start = time.perf_counter()
                run()
                seconds.append(time.perf_counter() - start)
            samples.append(dict(timer.seconds))
        peak_rss = peak_rss_mb()
        total_flops, stage_flops, executed = count_flops(model, run, stages) if flops else (0, {}, 0)
    median = statistics.median(seconds)
    gemm = statistics.median(rates)
    gflop = total_flops / 1e9
    result = {
        "median_seconds": median,
        "per_image_seconds": median / batch_size,
        "seconds": seconds,
        "stages": _stage_medians(samples),
        "gflop": gflop,
        "executed_gflop": executed / 1e9,
        "stage_gflop": {name: f / 1e9 for name, f in stage_flops.items()},
        "gemm_gflops": gemm,
        "efficiency": gflop / (median * gemm) if flops else None,
        "peak_rss_mb": peak_rss,
        "size_hw": [int(height), int(width)],
        "batch_size": batch_size,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
    }
    return result


__all__ = ["benchmark_model", "coco_prompt"]
