"""CPU benchmark tools for a GLIP model: per-stage median times, counted FLOPs, the machine's GEMM rate and peak RSS.

`glip.engine.benchmark.benchmark_model(cfg, size_hw, runs, warmup, threads)` (also importable from here) builds
the model of a config (or takes one), feeds a random image batch with the 80-class COCO prompt and returns a
JSON-ready dict with `median_seconds`, `gflop`, `gemm_gflops`, `efficiency` (= FLOPs / (median time x GEMM
rate)), `peak_rss_mb` and `stages` (median seconds of the backbone, FPN, language model, every dyhead tower
module, the predictors, anchors and post-processing).

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` counts every matrix product and
convolution (attention products included; the oneDNN operators of `glip.layers.cpu_gemm` by their formulas); the
modulated deformable convs, which it cannot see through (compiled kernel) or sees only partly (gather + GEMM
fallback), are replaced by their convolution count `2 * B * C_out * C_in / groups * kh * kw * H_out * W_out`, and
the fusion attention, whose inference path re-associates its projections (fewer FLOPs executed), by the count of
its reference formulation (six projections + three attention products); the Swin window attention is counted by
formula (FlopCounterMode misses the CPU fused attention kernel); `executed_gflop` reports what FlopCounterMode saw.
The peak RSS is read before the FLOP count.
"""
import functools
import logging
import resource
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

# stage name -> attribute path inside a GeneralizedVLRCNN; missing paths are skipped
MODEL_STAGES = (
    ("backbone", "backbone.body"),
    ("fpn", "backbone.fpn"),
    ("language", "language_backbone"),
    ("head", "rpn.head"),
    ("anchors", "rpn.anchor_generator"),
    ("postprocess", "rpn.box_selector_test"),
)


def _get_submodule(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    return module if isinstance(module, nn.Module) else None


def model_stages(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of the timed stages of a GLIP model: `MODEL_STAGES` plus `tower.{i}.<Class>` per dyhead
    tower module (e.g. `tower.00.VLFuse`)."""
    stages = [(name, m) for name, path in MODEL_STAGES if (m := _get_submodule(model, path)) is not None]
    tower = _get_submodule(model, "rpn.head.dyhead_tower")
    if tower is not None:
        stages += [(f"tower.{i:02d}.{type(m).__name__}", m) for i, m in enumerate(tower)]
    return stages


class StageTimer:
    """Wall time spent inside named modules, via forward pre/post hooks.

    `with StageTimer(stages) as timer: model(...)`, then `timer.seconds` = {name: total seconds during the
    block} (a module called several times accumulates). `reset()` clears the totals. `clock` (default
    time.perf_counter) may synchronise a GPU first.
    """

    def __init__(self, stages: Iterable[Tuple[str, nn.Module]], clock=time.perf_counter):
        self.stages = list(stages)
        self.clock = clock
        self.seconds: Dict[str, float] = {}
        self._start: Dict[str, List[float]] = {}
        self._handles = []

    def reset(self):
        self.seconds = {name: 0.0 for name, _ in self.stages}
        self._start = {name: [] for name, _ in self.stages}

    def _pre(self, name):
        def hook(module, args):
            self._start[name].append(self.clock())
        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.seconds[name] += self.clock() - self._start[name].pop()
        return hook

    def __enter__(self):
        self.reset()
        for name, module in self.stages:
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False


def deform_conv_flops(module: nn.Module, args: Sequence, kwargs: dict, output: torch.Tensor) -> int:
    """Convolution FLOPs of one modulated deformable conv call: 2 * B * C_out * C_in/groups * kh * kw * Ho * Wo."""
    out_c, in_per_group, kh, kw = module.weight.shape
    b, _, out_h, out_w = output.shape
    return 2 * b * out_c * in_per_group * kh * kw * out_h * out_w


def bi_attention_flops(module: nn.Module, args: Sequence, kwargs: dict, output) -> int:
    """FLOPs of one BiMultiHeadAttention call in the reference formulation: the six projections (v_proj,
    values_v_proj, out_v_proj on N visual positions; l_proj, values_l_proj, out_l_proj on T tokens) and the
    three attention products (A = q k^T, attn_v @ value_l, attn_l @ value_v), each 2 * B * N * T * embed_dim."""
    v = args[0] if args else kwargs["v"]
    l = args[1] if len(args) > 1 else kwargs["l"]
    bsz, n_vis, v_dim = v.shape
    n_txt, l_dim = l.shape[1:]
    embed = module.embed_dim
    projections = 3 * n_vis * v_dim * embed + 3 * n_txt * l_dim * embed
    return 2 * bsz * (projections + 3 * n_vis * n_txt * embed)


def window_attention_flops(module: nn.Module, args: Sequence, kwargs: dict, output) -> int:
    """FLOPs of one Swin WindowAttention call on x (B*nW, N, C): qkv and output projections and the two
    attention products (FlopCounterMode does not count the CPU fused attention kernel used at inference)."""
    x = args[0] if args else kwargs["x"]
    windows, n, c = x.shape
    return 2 * windows * (n * c * 3 * c + n * c * c + 2 * n * n * c)


def _pointwise_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN convolution with a fused post-op (`torch.ops.mkldnn._convolution_pointwise`): its convolution."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


def _pointwise_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN matmul (`torch.ops.mkldnn._linear_pointwise`): x (..., K) times weight (N, K)^T."""
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * x_shape[-1] * w_shape[0]


def _onednn_flop_formulas() -> dict:
    """FlopCounterMode formulas of the oneDNN operators `glip.layers.cpu_gemm` calls (absent from its registry)."""
    ops = getattr(torch.ops, "mkldnn", None)
    formulas = {}
    for name, formula in (("_convolution_pointwise", _pointwise_conv_flops),
                          ("_linear_pointwise", _pointwise_linear_flops)):
        if ops is not None and hasattr(ops, name):
            formulas[getattr(ops, name)] = formula  # keyed by the overload packet, as FlopCounterMode looks up
    return formulas


# class (module.qualname) -> FLOP formula replacing what FlopCounterMode sees inside its instances (subclasses too);
# named rather than imported so that this module stays below the model code
REFERENCE_FORMULAS = {
    "glip.layers.deform_conv.ModulatedDeformConv": deform_conv_flops,
    "glip.modeling.head.fusion.BiMultiHeadAttention": bi_attention_flops,
    "glip.modeling.backbone.swin.WindowAttention": window_attention_flops,
}
# classes whose work FlopCounterMode cannot see (the compiled DCN kernel, the CPU's fused scaled-dot-product
# attention) but which execute what their formula counts: their formula is also their executed count (the fusion
# attention's blocked evaluation runs as PyTorch matrix products, which the counter sees)
OPAQUE_CLASSES = frozenset({"glip.layers.deform_conv.ModulatedDeformConv",
                            "glip.modeling.backbone.swin.WindowAttention"})


def _reference_formula(module: nn.Module):
    """(formula, opaque) of `REFERENCE_FORMULAS` for `module`'s class or its nearest base class listed there, or
    None; `opaque`: the class is in OPAQUE_CLASSES."""
    for cls in type(module).__mro__:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in REFERENCE_FORMULAS:
            return REFERENCE_FORMULAS[name], name in OPAQUE_CLASSES
    return None


@contextmanager
def _formula_correction(model: nn.Module, counter: FlopCounterMode, totals: Dict[str, int]):
    """While active, the FLOPs `counter` sees inside modules with a reference formula are added to
    totals["seen"] and their formula counts to totals["formula"] (for opaque classes also to
    totals["opaque_seen"] / totals["opaque_formula"]): `counted - seen + formula` is the reference total and
    `counted - opaque_seen + opaque_formula` the executed one (outermost such module only)."""
    handles, starts = [], []

    def pre(module, args, kwargs):
        starts.append(counter.get_total_flops())

    def post(formula, opaque):
        def hook(module, args, kwargs, output):
            start = starts.pop()
            if not starts:
                seen, flops = counter.get_total_flops() - start, formula(module, args, kwargs, output)
                totals["seen"] += seen
                totals["formula"] += flops
                if opaque:
                    totals["opaque_seen"] += seen
                    totals["opaque_formula"] += flops
        return hook

    for m in model.modules():
        found = _reference_formula(m)
        if found is not None:
            handles += [m.register_forward_pre_hook(pre, with_kwargs=True),
                        m.register_forward_hook(post(*found), with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_flops(model: nn.Module, run, stages: Optional[Sequence[Tuple[str, nn.Module]]] = None,
                executed_stages: Optional[Dict[str, int]] = None) -> Tuple[int, Dict[str, int], int]:
    """FLOPs of one call of `run()` (a closure calling the model, without grad):
    (total, {stage: flops}, executed).

    Matrix products/convolutions are counted by FlopCounterMode; modulated deformable convs are counted as
    convolutions and the fusion attention in its reference formulation (see the module docstring), so `total`
    does not depend on how these are evaluated. `executed` counts what ran: FlopCounterMode's count, with the
    formula of the classes whose work it cannot see (OPAQUE_CLASSES) in place of what it saw there. When a dict
    `executed_stages` is given, it receives the executed FLOPs of every stage.
    """
    stages = list(stages or [])
    counter = FlopCounterMode(display=False, custom_mapping=_onednn_flop_formulas())
    totals = {"seen": 0, "formula": 0, "opaque_seen": 0, "opaque_formula": 0}
    per_stage = {name: 0 for name, _ in stages}
    per_stage_executed = {name: 0 for name, _ in stages}
    handles, starts = [], {}

    def corrected():
        return counter.get_total_flops() - totals["seen"] + totals["formula"]

    def executed():
        return counter.get_total_flops() - totals["opaque_seen"] + totals["opaque_formula"]

    def pre(module, args, name):
        starts.setdefault(name, []).append((corrected(), executed()))

    def post(module, args, output, name):
        start_ref, start_exec = starts[name].pop()
        per_stage[name] += corrected() - start_ref
        per_stage_executed[name] += executed() - start_exec

    # the formula hooks are registered first so that a stage's post hook sees its corrected count
    with _formula_correction(model, counter, totals):
        for name, module in stages:
            handles += [module.register_forward_pre_hook(functools.partial(pre, name=name)),
                        module.register_forward_hook(functools.partial(post, name=name))]
        try:
            with counter:
                run()
        finally:
            for handle in handles:
                handle.remove()
    if executed_stages is not None:
        executed_stages.update(per_stage_executed)
    return corrected(), per_stage, executed()


def gemm_gflops(size: int = 2048, runs: int = 3, dtype: torch.dtype = torch.float32, device="cpu",
                product: Optional[Callable] = None) -> float:
    """Measured dense matrix-product rate (GFLOP/s): median over `runs` of a (size x size) @ (size x size) product
    with the current torch thread setting (one untimed warm-up); on a GPU the clock synchronises. `product(a, b)`
    replaces `torch.mm` (e.g. the model's own CPU product, `glip.layers.cpu_gemm`)."""
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    out = torch.empty(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        return torch.mm(a, b, out=out) if product is None else product(a, b)
    run()
    rates = []
    for _ in range(runs):
        sync()
        start = time.perf_counter()
        run()
        sync()
        rates.append(2.0 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def median_seconds(fn, runs: int, warmup: int = 1) -> float:
    """Median wall seconds of `runs` calls of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _stage_medians(samples: List[Dict[str, float]]) -> Dict[str, float]:
    names = list(samples[0]) if samples else []
    medians = {name: statistics.median(s[name] for s in samples) for name in names}
    tower = [name for name in names if name.startswith("tower.")]
    if "head" in medians and tower:
        medians["predictors"] = statistics.median(s["head"] - sum(s[t] for t in tower) for s in samples)
    return medians


def _flop_columns(sec: float, ref: Optional[float], executed: Optional[float], gemm: float) -> str:
    if ref is None or executed is None:
        return ""
    rate = executed / sec if sec > 0 else 0.0
    return f" {ref:9.1f} {executed:9.1f} {rate:8.1f} {100 * rate / gemm:6.1f}%"


def format_report(result: dict) -> str:
    """Human-readable table of a `benchmark_model` result: per stage the median seconds, the reference's and the
    executed GFLOP, the executed rate (GFLOP/s) and that rate against the GEMM rate of the same run."""
    gemm = result["gemm_gflops"]
    lines = [f"input {result['size_hw'][0]}x{result['size_hw'][1]}, batch {result['batch_size']}, "
             f"{result['threads']} threads, median of {result['runs']} runs",
             f"  {'stage':<28s} {'seconds':>10s} {'ref GFLOP':>9s} {'exec GF':>9s} {'GFLOP/s':>8s} {'of GEMM':>7s}"]
    executed = result.get("stage_executed_gflop", {})
    for name, sec in result["stages"].items():
        cols = _flop_columns(sec, result["stage_gflop"].get(name), executed.get(name), gemm)
        lines.append(f"  {name:<28s} {sec:8.3f} s{cols}")
    eff = result["efficiency"]
    cols = _flop_columns(result["median_seconds"], result["gflop"], result["executed_gflop"], gemm) if eff else ""
    lines.append(f"  {'total':<28s} {result['median_seconds']:8.3f} s{cols}")
    lines.append(f"GEMM {gemm:.1f} GFLOP/s, efficiency (reference FLOPs) "
                 f"{'n/a' if eff is None else f'{100 * eff:.1f}%'}, peak RSS {result['peak_rss_mb']:.0f} MiB")
    return "\n".join(lines)


def __getattr__(name: str):
    """`benchmark_model` and `coco_prompt` build a model and a prompt, so they live above the model code in
    `glip.engine.benchmark`; kept importable from here (tools/benchmark.py imports them from this module)."""
    if name in ("benchmark_model", "coco_prompt"):
        from glip.engine import benchmark

        return getattr(benchmark, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
