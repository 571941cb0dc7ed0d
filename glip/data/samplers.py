"""Samplers of the training/test loaders: distributed split, aspect-ratio grouping, iteration-based batching."""
import bisect
import math
import random
from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data.sampler import BatchSampler, Sampler


def _shared_random_seed() -> int:
    """A random seed equal on every process (rank 0's draw, broadcast when torch.distributed is initialised)."""
    seed = random.SystemRandom().randrange(2 ** 31)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [seed]
        torch.distributed.broadcast_object_list(box, src=0)
        seed = box[0]
    return seed


class DistributedSampler(Sampler):
    """Each of ``num_replicas`` processes reads its own contiguous slice of one (shuffled) index order.

    The order is ``randperm(len, generator seeded with seed + epoch)`` (``use_random``: a seed shared by all processes
    instead) or ``0..len-1``; it is extended with its own first indices to ``ceil(len / R) * R`` entries so every
    rank gets ``num_samples`` indices; rank ``r`` takes entries ``[r * num_samples, (r + 1) * num_samples)``.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None, shuffle: bool = True,
                 use_random: bool = False, seed: int = 0):
        if num_replicas is None or rank is None:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise RuntimeError("DistributedSampler needs num_replicas and rank or an initialised process group")
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) / num_replicas))
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.use_random = use_random
        self.seed = seed

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(_shared_random_seed() if self.use_random else self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        while len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        offset = self.num_samples * self.rank
        return iter(indices[offset: offset + self.num_samples])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch: int):
        self.epoch = epoch


class GroupedBatchSampler(BatchSampler):
    """Batches whose samples share a group id (e.g. landscape vs portrait), following the sampler's order.

    Within a group, indices keep the sampler's order and are cut into ``batch_size`` chunks; batches are then
    ordered by the sampler position of their first element. ``drop_uneven`` drops incomplete batches.
    """

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int, drop_uneven: bool = False):
        if not isinstance(sampler, Sampler):
            raise ValueError("sampler should be a torch.utils.data.Sampler, got {}".format(sampler))
        self.sampler = sampler
        self.group_ids = torch.as_tensor(group_ids)
        self.batch_size = batch_size
        self.drop_uneven = drop_uneven
        self.groups = torch.unique(self.group_ids).sort(0)[0]
        self._batches = None
        self._can_reuse = False

    def _prepare_batches(self) -> List[List[int]]:
        sampled = list(self.sampler)
        position = {idx: pos for pos, idx in enumerate(sampled)}
        per_group = {int(g): [] for g in self.groups}
        for idx in sampled:
            per_group[int(self.group_ids[idx])].append(idx)
        chunks = []
        for group in sorted(per_group):
            members = per_group[group]
            chunks.extend(members[i: i + self.batch_size] for i in range(0, len(members), self.batch_size))
        chunks.sort(key=lambda batch: position[batch[0]])
        if self.drop_uneven:
            chunks = [batch for batch in chunks if len(batch) == self.batch_size]
        return chunks

    def __iter__(self):
        if self._can_reuse:
            batches, self._can_reuse = self._batches, False
        else:
            batches = self._prepare_batches()
        self._batches = batches
        return iter(batches)

    def __len__(self):
        if self._batches is None:
            self._batches = self._prepare_batches()
            self._can_reuse = True
        return len(self._batches)


class IterationBasedBatchSampler(BatchSampler):
    """Re-iterates a batch sampler until ``num_iterations`` batches were produced (counting from ``start_iter``).

    Before each pass the inner sampler's ``set_epoch(first iteration of the pass)`` is called when it has one,
    so a ``DistributedSampler`` reshuffles with that iteration as seed (the reference's rule). Passes start at
    multiples of the pass length; a run resumed at ``start_iter`` re-seeds the pass it stopped in and skips the
    batches already done, so it sees exactly the batches of the uninterrupted run.
    """

    def __init__(self, batch_sampler, num_iterations: int, start_iter: int = 0):
        self.batch_sampler = batch_sampler
        self.num_iterations = num_iterations
        self.start_iter = start_iter

    def __iter__(self):
        iteration = self.start_iter
        pass_length = len(self.batch_sampler)
        skip = iteration % pass_length if pass_length else 0
        while iteration <= self.num_iterations:
            inner = getattr(self.batch_sampler, "sampler", None)
            if hasattr(inner, "set_epoch"):
                inner.set_epoch(iteration - skip)
            produced = False
            for batch in self.batch_sampler:
                produced = True
                if skip:
                    skip -= 1
                    continue
                iteration += 1
                if iteration > self.num_iterations:
                    break
                yield batch
            if not produced:
                return

    def __len__(self):
        return self.num_iterations


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float]) -> List[int]:
    """Group id of each ``height / width`` ratio: the number of (sorted) ``bins`` <= it (``bisect_right``)."""
    edges = sorted(bins)
    return [bisect.bisect_right(edges, ratio) for ratio in aspect_ratios]



def iterations_for_epochs(max_epoch: int, dataset_len: int, ims_per_batch: int) -> int:
    """Iterations of ``max_epoch`` passes over ``dataset_len`` images in batches of ``ims_per_batch`` (all
    processes together), rounded down as the reference does: ``max_epoch * dataset_len // ims_per_batch``."""
    return max_epoch * dataset_len // ims_per_batch
