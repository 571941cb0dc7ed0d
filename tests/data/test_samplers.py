"""Samplers: distributed split for any world size, aspect-ratio grouping, iteration-based batching."""
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from glip.data.samplers import (
    DistributedSampler,
    GroupedBatchSampler,
    IterationBasedBatchSampler,
    aspect_ratio_groups,
)


def test_distributed_split_covers_dataset():
    data = list(range(10))
    for world in (1, 3, 4, 16):
        parts = [list(DistributedSampler(data, num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
        assert all(len(p) == -(-10 // world) for p in parts)
        flat = sum(parts, [])
        assert set(flat) == set(data) and len(flat) == -(-10 // world) * world
    assert list(DistributedSampler(data, 3, 1, shuffle=False)) == [4, 5, 6, 7]
    assert list(DistributedSampler(data, 3, 2, shuffle=False)) == [8, 9, 0, 1]


def test_distributed_shuffle_seeded_by_epoch():
    data = list(range(20))
    a = DistributedSampler(data, 2, 0)
    b = DistributedSampler(data, 2, 1)
    first = list(a) + list(b)
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(0)).tolist()
    assert first == expected
    a.set_epoch(5)
    assert list(a) == torch.randperm(20, generator=torch.Generator().manual_seed(5)).tolist()[:10]


def test_grouped_batches_follow_sampler_order():
    groups = [0, 1, 0, 1, 0, 0, 1]
    sampler = SequentialSampler(range(7))
    batches = list(GroupedBatchSampler(sampler, groups, 2))
    assert batches == [[0, 2], [1, 3], [4, 5], [6]]
    assert list(GroupedBatchSampler(sampler, groups, 2, drop_uneven=True)) == [[0, 2], [1, 3], [4, 5]]
    assert len(GroupedBatchSampler(sampler, groups, 2)) == 4


def test_aspect_ratio_groups():
    assert aspect_ratio_groups([0.5, 1.0, 1.5], [1]) == [0, 1, 1]


def test_iteration_based_resumes():
    inner = BatchSampler(SequentialSampler(range(5)), 2, drop_last=False)
    assert list(IterationBasedBatchSampler(inner, 5)) == [[0, 1], [2, 3], [4], [0, 1], [2, 3]]
    assert list(IterationBasedBatchSampler(inner, 5, start_iter=3)) == [[0, 1], [2, 3]]
    assert len(IterationBasedBatchSampler(inner, 7)) == 7


def test_resumed_iteration_sees_the_batches_of_the_uninterrupted_run():
    dataset = list(range(7))
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3)
    full = list(IterationBasedBatchSampler(BatchSampler(sampler, 2, drop_last=False), 11))
    assert len(full) == 11 and sorted(sum(full[:4], [])) == dataset  # one pass = 4 batches covering all
    assert full[:4] != full[4:8]  # each pass reshuffles
    for start in range(11):
        resumed = IterationBasedBatchSampler(BatchSampler(sampler, 2, drop_last=False), 11, start_iter=start)
        assert list(resumed) == full[start:], start
