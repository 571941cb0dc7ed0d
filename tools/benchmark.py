"""CPU benchmarks. Modes (one per flag, more can be added as further `--<mode>` flags):

    --ops   the compiled DCNv2 (glip._C) side by side with torchvision.ops.deform_conv2d: median forward and
            forward+backward times of a 256->256 3x3 modulated deformable conv (batch 1) on every FPN level of
            an 800x1216 input, and the speed-ups.

    --config-file C --size HxW   the GLIP eval forward of a config on a random HxW input with the 80-class COCO
            prompt: median seconds per stage (backbone, FPN, language, each fusion/DyConv block, predictors,
            post-processing), the counted FLOPs, this machine's fp32 GEMM rate measured in the same run, the
            efficiency FLOPs / (time x GEMM rate) and the peak RSS; `--json FILE` writes the same figures.

            Per stage the table gives the reference's FLOPs, the FLOPs actually executed, the executed rate and
            that rate against the GEMM rate. Several `--config-file`s give one table each and a summary (e.g. GLIP-T
            and GLIP-L); `--fusion blocked,batched` times the fusion attention's evaluations side by side in one
            process, runs interleaved (blocked: the projections regrouped onto the text side, visual rows in blocks,
            the default on the CPU; batched: the reference formulation). `--device cuda` and
            `--amp float16|bfloat16` run on a GPU.

    --train --config-file C --size HxW   a training step (forward, losses, backward, the config's optimizer) on
            a synthetic batch (random images, random boxes of COCO classes, the 80-class prompt): median seconds
            of each phase, images/s, and every stage's forward and backward alone (training runs the batched
            fusion).

    --optimizer --config-file C   one optimizer step (with the config's gradient clipping) over the config's
            model with random gradients: make_optimizer's fused step side by side with torch's default
            implementation over the same per-parameter groups.

    --onnx FILE --config-file C --size HxW   an exported model (tools/export.py) in onnxruntime side by side with
            the same model in PyTorch (`--weight` as exported) on the same random HxW input and caption: median
            seconds of each and the largest differences of their detections.

Examples: `python tools/benchmark.py --ops --threads 2`;
`python tools/benchmark.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml --size 800x1216 --runs 3`.
"""
import argparse
import logging
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glip.layers import extension  # noqa: E402
from glip.utils.errors import UserError, run_tool  # noqa: E402
from glip.utils.profiling import median_seconds  # noqa: E402

logger = logging.getLogger("benchmark")

FPN_LEVELS = ((100, 152), (50, 76), (25, 38), (13, 19), (7, 10))


def _dcn_inputs(height: int, width: int, channels: int, seed: int = 0):
    """Inputs of one DyConv deformable conv: x (1, C, H, W), offset (1, 18, H, W), mask (1, 9, H, W), weight, bias."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, height, width, generator=gen)
    offset = 2.0 * torch.randn(1, 18, height, width, generator=gen)
    mask = torch.rand(1, 9, height, width, generator=gen)
    weight = torch.randn(channels, channels, 3, 3, generator=gen) / (channels * 9) ** 0.5
    bias = 0.02 * torch.randn(channels, generator=gen)
    return [t.requires_grad_() for t in (x, offset, mask, weight, bias)]


def _ext_dcn(x, offset, mask, weight, bias):
    return extension.modulated_deform_conv(x, offset, mask, weight, bias, 1, 1, 1, 1, 1)


def _torchvision_dcn(x, offset, mask, weight, bias):
    import torchvision

    return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=1, padding=1, mask=mask)


def _time_impl(impl, inputs, repeats: int):
    def forward():
        with torch.no_grad():
            impl(*inputs)

    def forward_backward():
        for t in inputs:
            t.grad = None
        impl(*inputs).sum().backward()

    return median_seconds(forward, repeats), median_seconds(forward_backward, repeats)


def bench_ops(args) -> list:
    """Rows (level, ext fwd, tv fwd, ext fwd+bwd, tv fwd+bwd) in seconds; logs a table."""
    if extension.load() is None:
        logger.warning("glip._C is not available: only torchvision is timed")
    levels = FPN_LEVELS[: args.levels]
    rows = []
    header = f"{'level':>9} | {'ext fwd':>9} {'tv fwd':>9} {'speed-up':>8} | {'ext f+b':>9} {'tv f+b':>9} {'speed-up':>8}"
    logger.info("DCNv2 256->256 3x3, batch 1, %d threads, median of %d runs (ms)", torch.get_num_threads(),
                args.repeats)
    logger.info(header)
    for height, width in levels:
        inputs = _dcn_inputs(height, width, args.channels)
        ext = _time_impl(_ext_dcn, inputs, args.repeats) if extension.load() is not None else (float("nan"),) * 2
        tv = _time_impl(_torchvision_dcn, inputs, args.repeats)
        rows.append(((height, width), ext[0], tv[0], ext[1], tv[1]))
        logger.info(f"{height:>4}x{width:<4} | {ext[0] * 1e3:9.1f} {tv[0] * 1e3:9.1f} {tv[0] / ext[0]:7.2f}x | "
                    f"{ext[1] * 1e3:9.1f} {tv[1] * 1e3:9.1f} {tv[1] / ext[1]:7.2f}x")
    total = [sum(r[i] for r in rows) for i in range(1, 5)]
    logger.info(f"{'all':>9} | {total[0] * 1e3:9.1f} {total[1] * 1e3:9.1f} {total[1] / total[0]:7.2f}x | "
                f"{total[2] * 1e3:9.1f} {total[3] * 1e3:9.1f} {total[3] / total[2]:7.2f}x")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", action="store_true", help="compiled DCNv2 vs torchvision on the FPN levels")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--levels", type=int, default=len(FPN_LEVELS), help="first N FPN levels (P3 first)")
    parser.add_argument("--channels", type=int, default=256, help="input = output channels")
    parser.add_argument("--onnx", default="", metavar="FILE", help="time this exported model against PyTorch "
                        "(needs --config-file, and --weight as exported)")
    parser.add_argument("--optimizer", action="store_true", help="fused vs default optimizer step (needs a config)")
    parser.add_argument("--config-file", action="append", default=[],
                        help="benchmark this GLIP config's eval forward (repeat for several models)")
    parser.add_argument("--train", action="store_true", help="time a training step instead of the eval forward")
    parser.add_argument("--fusion", default="blocked", help="comma list of fusion paths timed side by side "
                        "(blocked, batched)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (model and training modes)")
    parser.add_argument("--amp", default="none", choices=["none", "float16", "bfloat16"], help="autocast dtype")
    parser.add_argument("--no-stages", action="store_true", help="training mode: skip the per-stage timings")
    parser.add_argument("--size", default="800x1216", help="network input HxW (model mode)")
    parser.add_argument("--runs", type=int, default=3, help="timed forwards (model mode)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards first (model mode)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward (model mode)")
    parser.add_argument("--weight", default="", help="load these weights first (default: the constructor's)")
    parser.add_argument("--json", default="", help="also write the figures to this file (model mode)")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (model mode)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.ops:
        bench_ops(args)
    elif args.onnx:
        if not args.config_file:
            parser.error("--onnx needs --config-file (and --weight) of the exported model")
        bench_onnx(args)
    elif args.optimizer:
        if not args.config_file:
            parser.error("--optimizer needs --config-file")
        bench_optimizer(args)
    elif args.train:
        if not args.config_file:
            parser.error("--train needs --config-file")
        bench_training(args)
    elif args.config_file:
        bench_model(args)
    else:
        parser.error("choose a mode: --ops or --config-file C --size HxW")


def bench_optimizer(args) -> dict:
    """Median seconds of one step of make_optimizer's (fused) optimizer and of the unfused one on the same groups."""
    from glip.config import cfg
    from glip.modeling.detector import build_detection_model
    from glip.solver.build import make_optimizer

    c = cfg.clone()
    c.merge_from_file(args.config_file[0])
    c.merge_from_list(["MODEL.DEVICE", "cpu"] + list(args.opts))
    model = build_detection_model(c)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    fused = make_optimizer(c, model)
    groups = [{k: v for k, v in g.items() if k != "fused"} for g in fused.param_groups]
    default = type(fused)(groups, c.SOLVER.BASE_LR)
    # Random N(0, 1) gradients (clipped as configured); a few warm-up steps first.
    result = {"tensors": len(params), "parameters": sum(p.numel() for p in params),
              "fused_s": median_seconds(fused.step, args.repeats, warmup=5),
              "default_s": median_seconds(default.step, args.repeats, warmup=5)}
    logger.info("%s over %d tensors (%.1fM parameters), %d threads, median of %d: fused %.1f ms, default %.1f ms "
                "(%.2fx)", type(fused).__name__, result["tensors"], result["parameters"] / 1e6,
                torch.get_num_threads(), args.repeats, result["fused_s"] * 1e3, result["default_s"] * 1e3,
                result["default_s"] / result["fused_s"])
    return result


def _size(args):
    try:
        return tuple(int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 800x1216, got {args.size!r}") from None


def bench_onnx(args) -> dict:
    """The ONNX mode: onnxruntime vs PyTorch, median seconds per image and the detection differences."""
    from glip.engine.preflight import check_weight
    from glip.engine.weights import load_weights
    from glip.export.module import ExportableGLIP, example_inputs
    from glip.export.onnx import time_side_by_side
    from glip.modeling.detector import build_detection_model
    from glip.utils import cli

    height, width = _size(args)
    if height % 32 or width % 32:
        raise UserError(f"--size {args.size}: the exported model takes multiples of 32")
    if not Path(args.onnx).is_file():
        raise UserError(f"--onnx {args.onnx}: no such file; write one with tools/export.py")
    c = cli.merge_config(cli.base_config(), args.config_file[0], list(args.opts))
    c.MODEL.DEVICE = "cpu"
    model = build_detection_model(c).eval()
    weight = check_weight(c, args.weight, args.config_file[0]) if args.weight else None
    if weight:
        load_weights(model, weight)
    wrapper = ExportableGLIP(model)
    result = time_side_by_side(wrapper, args.onnx, example_inputs(model, (height, width)), runs=args.runs,
                               warmup=args.warmup, threads=args.threads)
    logger.info("%s at %dx%d, %d threads, median of %d: onnxruntime %.3f s, PyTorch %.3f s (%.2fx); detections "
                "%d / %d, max |box| diff %.2e px, max |score| diff %.2e", args.onnx, height, width, args.threads,
                args.runs, result["onnx_s"], result["torch_s"], result["torch_s"] / result["onnx_s"],
                result["onnx_detections"], result["torch_detections"], result["box"], result["score"])
    return result


def _settings(args):
    """(fusion paths, device, amp dtype) from the command line, refused by name when unknown."""
    from glip.engine.benchmark import FUSION_PATHS

    paths = [p.strip() for p in args.fusion.split(",") if p.strip()]
    unknown = [p for p in paths if p not in FUSION_PATHS]
    if unknown or not paths:
        raise UserError(f"--fusion: unknown path(s) {unknown}; choose from {sorted(FUSION_PATHS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    amp = {"none": None, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.amp]
    return paths, args.device, amp


def _build(args, config_file: str):
    from glip.config import cfg
    from glip.modeling.detector import build_detection_model

    c = cfg.clone()
    c.merge_from_file(config_file)
    c.merge_from_list(["MODEL.DEVICE", "cpu"] + list(args.opts))
    model = build_detection_model(c)
    if args.weight:
        from glip.engine.preflight import check_weight
        from glip.engine.weights import load_weights

        load_weights(model, check_weight(c, args.weight, config_file))
    return c, model


def _merge(results: list) -> dict:
    """One result from single-run results of the same setting: medians over the runs, FLOPs from the last."""
    from glip.utils.profiling import _stage_medians

    merged = dict(results[-1])
    merged["seconds"] = [s for r in results for s in r["seconds"]]
    merged["median_seconds"] = statistics.median(merged["seconds"])
    merged["per_image_seconds"] = merged["median_seconds"] / merged["batch_size"]
    merged["gemm_gflops"] = statistics.median(r["gemm_gflops"] for r in results)
    merged["stages"] = _stage_medians([r["stages"] for r in results])
    merged["runs"] = len(merged["seconds"])
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    if merged["gflop"]:
        merged["efficiency"] = merged["gflop"] / (merged["median_seconds"] * merged["gemm_gflops"])
    return merged


def bench_model(args) -> dict:
    """The model mode: per config, the fusion paths side by side (runs interleaved); tables, summary, json."""
    import json

    from glip.engine.benchmark import benchmark_model, set_fusion_path
    from glip.utils.profiling import format_report

    size = _size(args)
    paths, device, amp = _settings(args)
    report = {}
    for config_file in args.config_file:
        _, model = _build(args, config_file)
        runs = {path: [] for path in paths}
        for r in range(args.runs):
            for path in paths:
                set_fusion_path(model, path)
                runs[path].append(benchmark_model(
                    size_hw=size, runs=1, warmup=args.warmup if r == 0 else 0, threads=args.threads,
                    batch_size=args.batch_size, model=model, flops=r == args.runs - 1 and device == "cpu",
                    device=device, amp_dtype=amp))
        for path in paths:
            result = _merge(runs[path])
            report[f"{Path(config_file).stem} [{path}]"] = result
            logger.info("%s, fusion %s, %s%s", config_file, path, device, f", autocast {args.amp}" if amp else "")
            logger.info(format_report(result))
        del model
    logger.info("summary (median s/forward, reference / executed GFLOP, GEMM GFLOP/s, peak RSS MiB):")
    for name, r in report.items():
        logger.info(f"  {name:<44s} {r['median_seconds']:8.3f} s  {r['gflop']:7.1f} / {r['executed_gflop']:7.1f}  "
                    f"GEMM {r['gemm_gflops']:6.1f}  RSS {r['peak_rss_mb']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def bench_training(args) -> dict:
    """The training mode: the fusion paths side by side (steps interleaved), stage times in the last round."""
    import json

    from glip.engine.benchmark import benchmark_training, set_fusion_path
    from glip.solver.build import make_optimizer
    from glip.utils.training_profile import format_training_report

    size = _size(args)
    paths, device, amp = _settings(args)
    c, model = _build(args, args.config_file[0])
    model.to(device)
    optimizer = make_optimizer(c, model)
    runs = {path: [] for path in paths}
    for r in range(args.runs):
        for path in paths:
            set_fusion_path(model, path)
            runs[path].append(benchmark_training(
                model, size, args.batch_size, runs=1, warmup=args.warmup if r == 0 else 0, threads=args.threads,
                device=device, amp_dtype=amp, optimizer=optimizer,
                stages=r == args.runs - 1 and not args.no_stages))
    report = {}
    for path in paths:
        result = dict(runs[path][-1])
        result["steps"] = [s for one in runs[path] for s in one["steps"]]
        for key in ("forward", "backward", "optimizer", "step"):
            result[key] = statistics.median(one[key] for one in runs[path])
        result["images_per_second"] = args.batch_size / result["step"]
        result["runs"] = len(result["steps"])
        report[path] = result
        logger.info("training step, %s, fusion %s, %s, batch %d, %dx%d, median of %d: %.3f s (%.2f images/s)",
                    args.config_file[0], path, device, args.batch_size, *size, result["runs"], result["step"],
                    result["images_per_second"])
        if result["stages"]:
            logger.info(format_training_report(result))
    if len(paths) > 1:
        first = report[paths[0]]["step"]
        for path in paths[1:]:
            logger.info("step %s / %s: %.2fx", path, paths[0], report[path]["step"] / first)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(run_tool(main))
