"""Export GLIP's one-image inference to ONNX (and optionally as a `torch.export` program).

Usage:
    python tools/export.py --config-file configs/pretrain/glip_Swin_T_O365_GoldG.yaml \
        --weight hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth --output glip_tiny.onnx \
        [--program glip_tiny.pt2] [--opset 20] [--example-size 320 352] [--no-check] [KEY VALUE ...]

The file takes `images` (1, 3, H, W) float32 (the test transform's output, padded to a multiple of 32),
`input_ids` / `attention_mask` (1, T) int64 and `positive_map` (L, T) float32, and returns `boxes` (K, 4),
`scores` (K,) and `labels` (K,) after the ATSS post-processing; any H, W (multiples of 32, 160 to 2048 px),
T <= 256 and L. The preprocessing settings are stored in the file's metadata (key "glip") for
`glip/export/runtime.py`, which runs it with onnxruntime alone. Unless `--no-check`, the exported file is run
once with onnxruntime on the example inputs and compared with PyTorch.
"""
import argparse
import importlib.util
import logging
import os
import sys
import time
from typing import Optional, Sequence

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import ConfigError, UserError, run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export GLIP (one image, any size and caption) to ONNX")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config (yaml)")
    parser.add_argument("--weight", default=None, metavar="FILE",
                        help="checkpoint: path, hf://OWNER/REPO/FILE or URL (default: MODEL.WEIGHT)")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--program", default=None, metavar="FILE",
                        help="also save the torch.export program (.pt2) here")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 20; DeformConv needs >= 19)")
    parser.add_argument("--example-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="size of the example image traced (default: one that pads every Swin stage)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch check")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides as KEY VALUE pairs")
    return parser


def load_config(args):
    """The merged config (frozen) on the CPU: config file, opts, ``--weight``; the weight checked against it."""
    from glip.engine.preflight import check_weight
    from glip.utils import cli

    cfg = cli.merge_config(cli.base_config(), args.config_file, list(args.opts or []))
    if args.weight:
        cfg.MODEL.WEIGHT = args.weight
    cfg.MODEL.DEVICE = "cpu"
    weight = check_weight(cfg, config_name=args.config_file)
    if weight:
        cfg.MODEL.WEIGHT = weight
    cfg.freeze()
    return cfg


def check_export_dependencies():
    """onnx, onnxscript and onnxruntime are installed (requirements.txt), else one line saying so."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"exporting needs {', '.join(missing)}: pip install {' '.join(missing)}")


def run(args) -> int:
    import torch

    from glip.engine.weights import load_weights
    from glip.export import onnx as onnx_export
    from glip.export.module import ExportableGLIP, example_inputs
    from glip.modeling.detector import build_detection_model

    if args.opset is not None and args.opset < 19:
        raise UserError(f"--opset {args.opset}: ONNX DeformConv needs opset 19 or later")
    if args.example_size and any(side < 64 or side % 32 for side in args.example_size):
        raise UserError(f"--example-size {args.example_size}: give multiples of 32 of at least 64")
    check_export_dependencies()
    cfg = load_config(args)
    model = build_detection_model(cfg).eval()
    if cfg.MODEL.WEIGHT:
        load_weights(model, cfg.MODEL.WEIGHT)
    else:
        logger.warning("no --weight and no MODEL.WEIGHT: exporting the constructor's initialisation")
    try:
        wrapper = ExportableGLIP(model)
    except NotImplementedError as err:  # a config setting the exported graph does not implement
        raise ConfigError(f"{err}; change it in the config or with KEY VALUE options") from err
    inputs = example_inputs(model, args.example_size)
    start = time.perf_counter()
    program = onnx_export.export_program(wrapper, inputs)
    logger.info("torch.export: %.0f s", time.perf_counter() - start)
    if args.program:
        torch.export.save(program, args.program)
        logger.info("wrote %s", args.program)
    start = time.perf_counter()
    onnx_export.export_onnx(program, args.output, opset=args.opset or onnx_export.OPSET,
                            metadata=onnx_export.preprocessing_metadata(cfg))
    logger.info("ONNX: %.0f s; wrote %s (%.1f MB)", time.perf_counter() - start, args.output,
                onnx_export.file_size(args.output) / 2 ** 20)
    if not args.no_check:
        diff = onnx_export.compare_with_pytorch(wrapper, args.output, inputs)
        logger.info("onnxruntime vs PyTorch on the example: %d / %d detections, max |box| diff %.2e px, "
                    "max |score| diff %.2e", diff["onnx_detections"], diff["torch_detections"], diff["box"],
                    diff["score"])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: parse `argv`, export, return the exit code (bad inputs: one line on stderr and 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return run_tool(lambda arguments: run(build_parser().parse_args(arguments)), argv)


if __name__ == "__main__":
    sys.exit(main())
