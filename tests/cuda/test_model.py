"""GLIP-T on a GPU: the goldens' detections, an fp16 (AMP) training step and a torchrun DDP step over NCCL.

Marked `cuda`: skipped without a GPU. TF32 is switched off so that fp32 means fp32 (the goldens' tolerances).
"""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_golden
from helpers.glip_model import check_detections, detect_golden, fill_model_, golden_config, golden_train_batch
from helpers.stochastic import no_dropout

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_model():
    """A separate golden GLIP-T on the GPU (the CPU tests' cached one stays on the CPU)."""
    from glip.modeling.detector import build_detection_model

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = fill_model_(build_detection_model(golden_config())).eval().cuda()
    yield model
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.mark.parametrize("size", ["320", "800"])
@pytest.mark.parametrize("image", ["astronaut", "chelsea"])
@pytest.mark.parametrize("caption", ["coco", "free"])
def test_detections_on_the_gpu_match_the_goldens(gpu_model, size, image, caption):
    det, ref = detect_golden(gpu_model, load_golden(f"infer_{image}_{size}.pt"), f"size{size}", caption,
                             device="cuda")
    check_detections(det, ref)


def test_amp_float16_training_step_has_finite_losses_and_float32_dcn(gpu_model):
    from glip.layers.deform_conv import ModulatedDeformConv

    golden = load_golden("train_losses.pt")
    images, targets = golden_train_batch(golden)
    dcn_dtypes = []
    hooks = [m.register_forward_hook(lambda mod, args, out: dcn_dtypes.append(out.dtype))
             for m in gpu_model.modules() if isinstance(m, ModulatedDeformConv)]
    scaler = torch.amp.GradScaler("cuda")
    gpu_model.train()
    try:
        with no_dropout(gpu_model, drop_path=True), torch.autocast("cuda", dtype=torch.float16):
            losses = gpu_model(images.to("cuda"), targets=[t.to("cuda") for t in targets],
                               captions=golden["captions"], positive_map=golden["positive_map"].cuda())
        scaler.scale(sum(losses.values())).backward()
        grads = [p.grad for p in gpu_model.parameters() if p.grad is not None]
        inv_scale = 1.0 / scaler.get_scale()
        grad_norm = math.sqrt(sum((g.double() * inv_scale).pow(2).sum().item() for g in grads))
    finally:
        for h in hooks:
            h.remove()
        gpu_model.zero_grad(set_to_none=True)
        gpu_model.eval()
    assert dcn_dtypes and set(dcn_dtypes) == {torch.float32}
    for name, ref in golden["loss_dict"].items():
        assert math.isfinite(float(losses[name])), name
        assert float(losses[name]) == pytest.approx(float(ref), rel=2e-2, abs=1e-3), name
    assert math.isfinite(grad_norm)
    assert grad_norm == pytest.approx(golden["total_grad_norm_all_params"], rel=5e-2)


WORKER = r'''
import json, os, sys
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.environ["GLIP_REPO"], "tests"))
from helpers import load_golden
from helpers.glip_model import fill_model_, golden_config, golden_train_batch
from helpers.stochastic import no_dropout
from glip.engine.run import wrap_distributed
from glip.modeling.detector import build_detection_model
from glip.structures.image_list import ImageList

torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
local_rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(local_rank)
device = torch.device("cuda", local_rank)
cfg = golden_config()
model = fill_model_(build_detection_model(cfg)).to(device)
ddp = wrap_distributed(cfg, model, local_rank, device)
ddp.train()
golden = load_golden("train_losses.pt")
images, targets = golden_train_batch(golden)
counts = [len(t) for t in targets]
if world == 1:
    part, rows = list(range(len(targets))), slice(0, sum(counts))
else:
    part, rows = [rank], slice(sum(counts[:rank]), sum(counts[:rank + 1]))
batch = ImageList(images.tensors[part].to(device), [images.image_sizes[i] for i in part])
with no_dropout(model, drop_path=True):
    losses = ddp(batch, targets=[targets[i].to(device) for i in part], captions=[golden["captions"][i] for i in part],
                 positive_map=golden["positive_map"][rows].to(device))
    sum(losses.values()).backward()
norm = sum(p.grad.double().pow(2).sum().item() for p in model.parameters() if p.grad is not None) ** 0.5
if rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump({"world": world, "losses": {k: float(v) for k, v in losses.items()}, "grad_norm": norm}, f)
dist.destroy_process_group()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp_step_over_nccl(tmp_path):
    """One DDP training step of GLIP-T on min(2, #GPUs) processes: with one process the losses are the goldens';
    in every case the all-reduced gradient norm is the golden batch's (losses normalised over all ranks)."""
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), GLIP_REPO=str(REPO), OMP_NUM_THREADS="2")
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    nproc = min(2, torch.cuda.device_count())
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    command = [torchrun, "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port",
               str(_free_port()), str(tmp_path / "worker.py"), str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    golden = load_golden("train_losses.pt")
    assert report["world"] == nproc
    assert all(math.isfinite(v) for v in report["losses"].values())
    if nproc == 1:
        for name, ref in golden["loss_dict"].items():
            assert report["losses"][name] == pytest.approx(float(ref), rel=1e-3, abs=1e-5), name
    assert report["grad_norm"] == pytest.approx(golden["total_grad_norm_all_params"], rel=1e-2)
