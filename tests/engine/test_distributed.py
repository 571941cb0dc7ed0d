"""Distributed training on CPU: 2 processes (torchrun, gloo) on a tiny GLIP.

The DDP gradients equal one process's gradients on the combined batch (the losses are normalised by positives
summed over all processes), and running tools/train_net.py under torchrun writes checkpoints and log.txt from
rank 0 only.
"""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.stochastic import no_dropout

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_net_tool_test", REPO / "tests/tools/test_train_net.py")
tool_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool_test)

WORKER = r'''
import json
import os
import sys

import torch
import torch.distributed as dist

torch.set_num_threads(1)
sys.path.insert(0, os.path.join(os.environ["GLIP_REPO"], "tests"))
from helpers.stochastic import no_dropout_in_process

no_dropout_in_process()

from glip.config import cfg as default_cfg
from glip.engine import checkpointer as checkpointer_module
from glip.engine.run import wrap_distributed
from glip.engine.weights import load_weights
from glip.modeling.detector import build_detection_model
from glip.structures.image_list import ImageList

config_path, batch_path, init_path, out = sys.argv[1:5]
dist.init_process_group("gloo")
rank = dist.get_rank()

# 1. One DDP step on this rank's image of the batch.
cfg = default_cfg.clone()
cfg.merge_from_file(config_path)
torch.manual_seed(100 + rank)  # different initialisations: DDP must broadcast rank 0's, then the weights load
model = build_detection_model(cfg)
ddp = wrap_distributed(cfg, model, 0, torch.device("cpu"))
load_weights(model, init_path)
ddp.train()
batch = torch.load(batch_path, weights_only=False)
counts = [len(t) for t in batch["targets"]]
start = sum(counts[:rank])
images = ImageList(batch["images"][rank:rank + 1], [batch["image_sizes"][rank]])
losses = ddp(images, targets=[batch["targets"][rank]], captions=[batch["captions"][rank]],
             positive_map=batch["positive_map"][start:start + counts[rank]])
sum(losses.values()).backward()
if rank == 0:
    torch.save({k: p.grad for k, p in model.named_parameters() if p.grad is not None}, os.path.join(out, "ddp.pt"))

# 2. The tool under the same process group; record who writes what.
writes = []
_atomic_write = checkpointer_module._atomic_write


def _recording(path, write):
    writes.append(os.path.basename(path))
    return _atomic_write(path, write)


checkpointer_module._atomic_write = _recording
sys.argv = ["train_net.py", "--config-file", config_path, "--skip-test", "MODEL.WEIGHT", init_path,
            "SOLVER.MAX_ITER", "1", "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", os.path.join(out, "run")]
import logging
import runpy

code = None
try:
    runpy.run_path(os.path.join(os.environ["GLIP_REPO"], "tools/train_net.py"), run_name="__main__")
except SystemExit as stop:
    code = stop.code
file_handlers = [h.baseFilename for h in logging.getLogger("glip").handlers if hasattr(h, "baseFilename")]
with open(os.path.join(out, "rank{}.json".format(rank)), "w") as f:
    json.dump({"writes": writes, "file_handlers": file_handlers, "code": code}, f)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _combined_batch(cfg):
    """The first training batch of 2 images, as the single-process loader gives it."""
    from glip.data.build import make_data_loader

    batch = next(iter(make_data_loader(cfg, is_train=True)))
    return batch.images, batch.targets, batch.positive_map


@pytest.mark.slow
def test_ddp_gradients_equal_single_process_and_only_rank0_writes(tmp_path, monkeypatch):
    from glip.config import cfg as default_cfg
    from glip.engine.weights import load_weights
    from glip.modeling.detector import build_detection_model

    monkeypatch.setenv("DATASET", str(tmp_path))
    tool_test.write_tiny_dataset(tmp_path, identical=False)
    config = tool_test.write_tiny_config(tmp_path / "tiny.yaml", {"DATASETS": {"RANDOM_SAMPLE_NEG": 0}})
    tool_test.save_initial_checkpoint(config, tmp_path / "init.pth")
    cfg = default_cfg.clone()
    cfg.merge_from_file(str(config))
    images, targets, positive_map = _combined_batch(cfg)
    assert len(targets) == 2 and images.tensors.shape[0] == 2
    torch.save({"images": images.tensors, "image_sizes": list(images.image_sizes), "targets": targets,
                "captions": [t.get_field("caption") for t in targets], "positive_map": positive_map},
               tmp_path / "batch.pt")

    (tmp_path / "worker.py").write_text(WORKER)
    env = dict(os.environ, DATASET=str(tmp_path), PYTHONPATH=str(REPO), GLIP_REPO=str(REPO), OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    command = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(tmp_path / "worker.py"), str(config), str(tmp_path / "batch.pt"), str(tmp_path / "init.pth"),
               str(tmp_path)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    model = build_detection_model(cfg)
    load_weights(model, tmp_path / "init.pth")
    model.train()
    with no_dropout(model):
        losses = model(images, targets=targets, captions=[t.get_field("caption") for t in targets],
                       positive_map=positive_map)
        sum(losses.values()).backward()
    single = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert sorted(ddp) == sorted(single)
    for key, grad in single.items():
        torch.testing.assert_close(ddp[key], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item() + 1e-9,
                                   msg=key)

    reports = [json.loads((tmp_path / "rank{}.json".format(r)).read_text()) for r in (0, 1)]
    assert reports[0]["code"] in (0, None) and reports[1]["code"] in (0, None)
    assert "model_final.pth" in reports[0]["writes"] and "last_checkpoint" in reports[0]["writes"]
    assert reports[1]["writes"] == [] and reports[1]["file_handlers"] == []
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["config.yml", "last_checkpoint", "log.txt", "model_final.pth"]
    log = (run / "log.txt").read_text()
    assert log.count("Start training at iteration 0 of 1") == 1 and "Using 2 processes" in log
    final = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 1 and len(final["rng"]) == 2
