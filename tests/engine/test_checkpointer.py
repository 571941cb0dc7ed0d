"""Checkpointer: reference layout, atomic writes, full restore for resuming, rank-0-only writing."""
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from glip.engine.checkpointer import Checkpointer
from glip.engine.ema import ModelEma
from glip.solver.lr_scheduler import WarmupMultiStepLR


def _state(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, [2], warmup_iters=1)
    return model, optimizer, scheduler


def _train_step(model, optimizer, scheduler):
    loss = model(torch.randn(5, 3)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def test_layout_and_contents(tmp_path):
    model, optimizer, scheduler = _state()
    ema = ModelEma(model, decay=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=128.0)
    ckpt = Checkpointer(model, optimizer, scheduler, str(tmp_path), save_to_disk=True, ema=ema, scaler=scaler)
    assert not ckpt.has_checkpoint()
    ckpt.save("model_{:07d}".format(25), iteration=25)
    assert (tmp_path / "model_0000025.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000025.pth"
    assert ckpt.has_checkpoint()
    data = torch.load(tmp_path / "model_0000025.pth", map_location="cpu", weights_only=True)
    assert set(data) == {"model", "optimizer", "scheduler", "model_ema", "scaler", "rng", "iteration"}
    assert data["iteration"] == 25 and set(data["model"]) == set(model.state_dict())
    assert data["scaler"]["scale"] == 128.0 and len(data["rng"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000025.pth"]


def test_only_the_writer_touches_disk(tmp_path):
    model, optimizer, scheduler = _state()
    Checkpointer(model, optimizer, scheduler, str(tmp_path), save_to_disk=False).save("model_final", iteration=1)
    Checkpointer(model, optimizer, scheduler, "", save_to_disk=True).save("model_final", iteration=1)
    assert os.listdir(tmp_path) == []


def test_resume_restores_everything(tmp_path):
    model, optimizer, scheduler = _state(0)
    ema = ModelEma(model, decay=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    for _ in range(3):
        _train_step(model, optimizer, scheduler)
        ema.update(model)
    Checkpointer(model, optimizer, scheduler, str(tmp_path), True, ema=ema, scaler=scaler).save(
        "model_0000003", iteration=3, eval_result=0.5)
    after_save = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])

    model2, optimizer2, scheduler2 = _state(1)
    ema2 = ModelEma(model2, decay=0.9)
    scaler2 = torch.amp.GradScaler("cpu")
    extra = Checkpointer(model2, optimizer2, scheduler2, str(tmp_path), True, ema=ema2, scaler=scaler2).load()
    assert extra == {"iteration": 3, "eval_result": 0.5}
    resumed = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(after_save[0], resumed[0]) and np.array_equal(after_save[1], resumed[1])
    assert after_save[2] == resumed[2]
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key])
    for key, value in ema.state_dict().items():
        assert torch.equal(value, ema2.state_dict()[key])
    assert scheduler2.last_epoch == 3 and scaler2.get_scale() == 64.0
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert torch.equal(optimizer2.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_entries_without_attached_ema_are_returned(tmp_path):
    model, optimizer, scheduler = _state()
    ema = ModelEma(model, decay=0.9)
    Checkpointer(model, optimizer, scheduler, str(tmp_path), True, ema=ema).save("model_final", iteration=7)
    extra = Checkpointer(model, optimizer, scheduler, str(tmp_path), True).load()
    assert extra["iteration"] == 7 and set(extra["model_ema"]) == set(model.state_dict())


def test_skip_optimizer_keeps_fresh_optimizer(tmp_path):
    model, optimizer, scheduler = _state()
    _train_step(model, optimizer, scheduler)
    Checkpointer(model, optimizer, scheduler, str(tmp_path), True).save("model_0000001", iteration=1)
    model2, optimizer2, scheduler2 = _state(3)
    Checkpointer(model2, optimizer2, scheduler2, str(tmp_path), True).load(skip_optimizer=True)
    assert scheduler2.last_epoch == 0 and optimizer2.state_dict()["state"] == {}
    assert torch.equal(model2[0].weight, model[0].weight)


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, scheduler = _state()
    ckpt = Checkpointer(model, optimizer, scheduler, str(tmp_path), True)
    ckpt.save("model_0000001", iteration=1)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError):
        ckpt.save("model_0000001", iteration=2)  # overwriting the same name must not corrupt it
    with pytest.raises(OSError):
        ckpt.save("model_0000002", iteration=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    extra = ckpt.load()
    assert extra["iteration"] == 1 and torch.equal(model[0].weight, good["0.weight"])


def test_crash_while_tagging_keeps_previous_tag(tmp_path, monkeypatch):
    model, optimizer, scheduler = _state()
    ckpt = Checkpointer(model, optimizer, scheduler, str(tmp_path), True)
    ckpt.save("model_0000001", iteration=1)
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        ckpt.save("model_0000002", iteration=2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth", "model_0000002.pth"]


def test_load_weights_when_no_checkpoint(tmp_path):
    model, optimizer, scheduler = _state(0)
    weights = tmp_path / "weights.pth"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, weights)
    model2, optimizer2, scheduler2 = _state(1)
    out_dir = tmp_path / "run"
    ckpt = Checkpointer(model2, optimizer2, scheduler2, str(out_dir), True)
    assert ckpt.load(str(weights)) == {}
    assert torch.equal(model2[2].weight, model[2].weight)
    assert ckpt.load(None) == {}


def _distributed_worker(rank, init_file, out_dir, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
    try:
        model, optimizer, scheduler = _state(0)
        torch.manual_seed(rank)
        ckpt = Checkpointer(model, optimizer, scheduler, out_dir)  # writer: rank 0 only (the default)
        ckpt.save("model_0000001", iteration=1)
        dist.barrier()
        expected = torch.rand(2)
        torch.manual_seed(99)
        extra = ckpt.load()
        results[rank] = (extra["iteration"], torch.equal(torch.rand(2), expected))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawning two interpreters takes tens of seconds on the shared machine
def test_two_processes_one_writer_per_rank_random_states(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path / "out"), results), nprocs=2)
    assert dict(results) == {0: (1, True), 1: (1, True)}
    data = torch.load(tmp_path / "out" / "model_0000001.pth", weights_only=True)
    assert len(data["rng"]) == 2 and not torch.equal(data["rng"][0]["torch"], data["rng"][1]["torch"])
    assert sorted(os.listdir(tmp_path / "out")) == ["last_checkpoint", "model_0000001.pth"]


def test_extra_data_is_saved_as_plain_data(tmp_path):
    """numpy numbers / arrays a caller passes (e.g. an evaluation score) are stored as Python numbers and tensors,
    so the checkpoint loads with weights_only (torch's default allow-list, nothing added)."""
    model, optimizer, scheduler = _state()
    ckpt = Checkpointer(model, optimizer, scheduler, str(tmp_path), save_to_disk=True)
    ckpt.save("model_final", iteration=np.int64(3), eval_result=np.float64(0.5),
              history={"ap": [np.float32(0.25)], "table": np.arange(3)})
    data = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert type(data["iteration"]) is int and data["iteration"] == 3
    assert type(data["eval_result"]) is float and data["eval_result"] == 0.5
    assert data["history"]["ap"] == [0.25] and torch.equal(data["history"]["table"], torch.arange(3))


def test_resuming_from_a_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    from glip.utils.errors import UntrustedCheckpointError

    class WritesAFile:
        def __reduce__(self):
            return (exec, ("open({!r}, 'w').write('x')".format(str(tmp_path / "code_ran")),))

    monkeypatch.delenv("GLIP_TRUST_CHECKPOINTS", raising=False)
    model, optimizer, scheduler = _state()
    ckpt = Checkpointer(model, optimizer, scheduler, str(tmp_path), save_to_disk=True)
    torch.save({"model": model.state_dict(), "iteration": WritesAFile()}, tmp_path / "model_0000004.pth")
    ckpt.tag_last_checkpoint("model_0000004.pth")
    with pytest.raises(UntrustedCheckpointError, match="model_0000004.pth.*GLIP_TRUST_CHECKPOINTS=1"):
        ckpt.load()
    assert not (tmp_path / "code_ran").exists()
