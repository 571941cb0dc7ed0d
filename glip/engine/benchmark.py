"""Benchmark of a GLIP model built from a config: `benchmark_model(cfg, size_hw, runs, warmup, threads)` builds the
model (or takes one) and the 80-class COCO prompt, then times and counts it with the tools of
`glip.utils.profiling` (stage timers, counted FLOPs, GEMM rate, peak RSS; see that module for the figures).

It lives in the engine because it builds a model and a prompt (modeling and data); `glip.utils.profiling`, below
the model code, only measures modules it is given.
"""
import contextlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from glip.data.positive_map import create_queries_and_maps
from glip.layers import cpu_gemm
from glip.modeling.detector import build_detection_model
from glip.modeling.head.fusion import BiMultiHeadAttention
from glip.structures.bounding_box import BoxList
from glip.utils.profiling import (COCO_CLASSES, StageTimer, _stage_medians, count_flops, gemm_gflops, model_stages,
                                  peak_rss_mb)
from glip.utils.training_profile import benchmark_training_step

# fusion attention evaluations at inference, for side-by-side runs: name -> BiMultiHeadAttention.blocked_inference
FUSION_PATHS = {
    "blocked": True,    # the visual-side projections regrouped onto the text side, rows in blocks (the default)
    "batched": False,   # the reference's (B*heads, N, T) formulation
}


def set_fusion_path(model: nn.Module, path: str) -> None:
    """Select one of FUSION_PATHS on every fusion attention of `model`."""
    if path not in FUSION_PATHS:
        raise ValueError(f"unknown fusion path {path!r}; choose from {sorted(FUSION_PATHS)}")
    for module in model.modules():
        if isinstance(module, BiMultiHeadAttention):
            module.blocked_inference = FUSION_PATHS[path]


def _model_product(device: torch.device):
    """The matrix product the model's layers use on `device` (on the CPU `glip.layers.cpu_gemm`, oneDNN unless
    GLIP_CPU_GEMM=mkl), so that the GEMM rate is the rate its products can reach; None: torch.mm."""
    if device.type != "cpu":
        return None
    return cpu_gemm.linear  # a @ b^T: the same work as a @ b


def device_clock(device: torch.device) -> Callable[[], float]:
    """perf_counter, after synchronising the device when it is a GPU."""
    if device.type != "cuda":
        return time.perf_counter

    def clock():
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return clock


def coco_prompt(tokenizer=None) -> Tuple[str, Dict[int, List[int]]]:
    """The 80-class COCO detection prompt `person. bicycle. ... toothbrush` and its label -> token indices map."""
    return create_queries_and_maps(list(range(1, len(COCO_CLASSES) + 1)), list(COCO_CLASSES), tokenizer)


def benchmark_model(cfg=None, size_hw: Tuple[int, int] = (800, 1216), runs: int = 3, warmup: int = 1,
                    threads: int = 2, batch_size: int = 1, model: Optional[nn.Module] = None,
                    caption: Optional[str] = None, positive_map: Optional[Dict[int, List[int]]] = None,
                    flops: bool = True, gemm_size: int = 2048, seed: int = 0, device: str = "cpu",
                    amp_dtype: Optional[torch.dtype] = None) -> dict:
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
        device, amp_dtype: where to run and the autocast dtype (None: none); on a GPU the clock synchronises.
    Returns a dict: `median_seconds` (per forward), `per_image_seconds`, `seconds` (all runs), `stages`
    {name: median seconds}, `gflop` (per forward, reference formulation), `executed_gflop`, `stage_gflop`,
    `gemm_gflops` (median), `efficiency`, `peak_rss_mb` (before the FLOP count), and the settings
    (`size_hw`, `batch_size`, `threads`, `runs`, `warmup`). `stage_executed_gflop`: the executed FLOPs per stage.
    """
    torch.set_num_threads(threads)
    device = torch.device(device)
    if model is None:
        model = build_detection_model(cfg)
    model.eval().to(device)
    if caption is None:
        caption, default_map = coco_prompt(getattr(model, "tokenizer", None))
        positive_map = default_map if positive_map is None else positive_map
    height, width = size_hw
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=gen).to(device)
    captions = [caption] * batch_size
    stages = model_stages(model)
    clock = device_clock(device)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())

    def run():
        with autocast:
            return model(images, captions=captions, positive_map=positive_map)

    with torch.no_grad():
        for _ in range(warmup):
            run()
        seconds, samples, rates = [], [], []
        for _ in range(runs):
            rates.append(gemm_gflops(gemm_size, runs=1, device=device, product=_model_product(device)))
            with StageTimer(stages, clock=clock) as timer:
                start = clock()
                run()
                seconds.append(clock() - start)
            samples.append(dict(timer.seconds))
        peak_rss = peak_rss_mb()
        stage_executed = {}
        total_flops, stage_flops, executed = (count_flops(model, run, stages, stage_executed) if flops
                                              else (0, {}, 0))
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
        "stage_executed_gflop": {name: f / 1e9 for name, f in stage_executed.items()},
        "device": str(device),
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
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


def synthetic_training_batch(batch_size: int, size_hw: Tuple[int, int], boxes_per_image: int = 6, seed: int = 0,
                             tokenizer=None) -> dict:
    """A training batch of random images with random boxes of random COCO classes, captioned with the 80-class
    prompt: {"images" (B, 3, H, W), "targets" [BoxList with "labels"], "captions", "positive_map" (boxes, 256)
    (each box's row spreads 1 over its class's tokens)}."""
    caption, label_to_tokens = coco_prompt(tokenizer)
    gen = torch.Generator().manual_seed(seed)
    height, width = size_hw
    targets, rows = [], []
    for _ in range(batch_size):
        xy = torch.rand(boxes_per_image, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = torch.rand(boxes_per_image, 2, generator=gen) * torch.tensor([width * 0.3, height * 0.3]) + 16
        box = BoxList(torch.cat([xy, xy + wh], dim=1), (width, height), mode="xyxy")
        labels = torch.randint(1, len(COCO_CLASSES) + 1, (boxes_per_image,), generator=gen)
        box.add_field("labels", labels)
        targets.append(box)
        for label in labels.tolist():
            row = torch.zeros(256)
            row[label_to_tokens[label]] = 1.0 / len(label_to_tokens[label])
            rows.append(row)
    return {"images": torch.randn(batch_size, 3, height, width, generator=gen), "targets": targets,
            "captions": [caption] * batch_size, "positive_map": torch.stack(rows)}


def benchmark_training(model: nn.Module, size_hw: Tuple[int, int] = (800, 1216), batch_size: int = 1,
                       runs: int = 3, warmup: int = 1, threads: int = 2, device: str = "cpu",
                       amp_dtype: Optional[torch.dtype] = None, optimizer: Optional[torch.optim.Optimizer] = None,
                       stages: bool = True) -> dict:
    """Median seconds of a training step (forward, backward, optimizer) of `model` on a synthetic batch and,
    with `stages`, the forward/backward of every stage alone (`glip.utils.training_profile`). Under a float16
    autocast the loss is scaled by a GradScaler. Adds `images_per_second` and the settings to the result."""
    torch.set_num_threads(threads)
    device = torch.device(device)
    model.to(device)
    data = synthetic_training_batch(batch_size, size_hw, tokenizer=getattr(model, "tokenizer", None))
    batch = {"images": data["images"].to(device), "targets": [t.to(device) for t in data["targets"]],
             "captions": data["captions"], "positive_map": data["positive_map"].to(device)}
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    result = benchmark_training_step(model, batch, model_stages(model) if stages else (), runs=runs, warmup=warmup,
                                     optimizer=optimizer, clock=device_clock(device), amp_dtype=amp_dtype,
                                     scaler=scaler)
    result.update({"images_per_second": batch_size / result["step"], "size_hw": [int(v) for v in size_hw],
                   "batch_size": batch_size, "threads": threads, "runs": runs, "warmup": warmup,
                   "device": str(device), "amp_dtype": None if amp_dtype is None else str(amp_dtype)})
    return result


__all__ = ["FUSION_PATHS", "benchmark_model", "benchmark_training", "coco_prompt", "set_fusion_path",
           "synthetic_training_batch"]
