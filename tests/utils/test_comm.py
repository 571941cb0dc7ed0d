"""glip.utils.comm: single-process fallbacks, and (slow) real collectives over gloo."""
import os
import socket

import pytest
import torch

from glip.utils import comm


def test_single_process_fallbacks(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert comm.get_world_size() == 1 and comm.get_rank() == 0 and comm.get_local_rank() == 0
    assert comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    losses = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)}
    assert comm.reduce_dict(losses) is losses
    t = torch.arange(3.0)
    assert comm.reduce_sum(t) is t
    assert comm.broadcast_data([1, 2]) == [1, 2]
    seed = comm.shared_random_seed()
    assert isinstance(seed, int) and 0 <= seed < 2 ** 31
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert comm.get_local_rank() == 2


def _worker(rank, world_size, port, results):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        out = {
            "world": comm.get_world_size(),
            "rank": comm.get_rank(),
            "gather": comm.all_gather(("r", rank)),
            "sum": comm.reduce_sum(torch.tensor([float(rank + 1)])).tolist(),
            "bcast": comm.broadcast_data({"from": rank}),
            "seed_equal": len(set(comm.all_gather(comm.shared_random_seed()))) == 1,
        }
        reduced = comm.reduce_dict({"b": torch.tensor(float(rank)), "a": torch.tensor(2.0 * rank)})
        if rank == 0:
            out["reduced"] = {k: v.item() for k, v in reduced.items()}
        comm.synchronize()
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_collectives():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
    r0, r1 = results[0], results[1]
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)
    assert r0["gather"] == r1["gather"] == [("r", 0), ("r", 1)]
    assert r0["sum"] == r1["sum"] == [3.0]
    assert r0["bcast"] == r1["bcast"] == {"from": 0}
    assert r0["seed_equal"] and r1["seed_equal"]
    assert r0["reduced"] == {"a": 1.0, "b": 0.5}
