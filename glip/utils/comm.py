"""Multi-process helpers that degrade to no-ops in a single process (the usual CPU case).

All functions work without ``torch.distributed`` being initialised; when it is, they use
the generic collectives (``all_gather_object``), so they run on the gloo (CPU) and nccl
backends alike.
"""
import os

import torch
import torch.distributed as dist


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if _dist_ready() else 1


def get_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if _dist_ready() else 0


def get_local_rank() -> int:
    """Rank within the node, from ``LOCAL_RANK`` (set by torchrun); 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0, the process that writes logs, checkpoints and results."""
    return get_rank() == 0


def synchronize():
    """Barrier across all processes; returns at once in a single process."""
    if _dist_ready() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather(data):
    """Gather any picklable object from every rank; returns a list ordered by rank."""
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, data)
    return gathered


def reduce_dict(input_dict, average=True):
    """Sum (or average) a dict of scalar tensors onto rank 0, keys sorted for a fixed order.

    Other ranks get partial sums, as in the reference; only rank 0's result is meaningful.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return dict(zip(names, values))


def reduce_sum(tensor):
    """All-reduce sum of ``tensor`` (a copy); the tensor itself in a single process."""
    if get_world_size() <= 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_data(data):
    """Rank 0's ``data`` (a picklable object) on every rank."""
    if not _dist_ready():
        return data
    box = [data]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_random_seed() -> int:
    """A random int in [0, 2**31) that is identical on all ranks (all ranks must call it)."""
    seed = int(torch.randint(2 ** 31, (1,)).item())
    return all_gather(seed)[0]
