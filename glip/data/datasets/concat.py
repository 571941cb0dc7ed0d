"""Dataset combinators: concatenation with image-info lookup, and repetition (``DATASETS.*_COPY``)."""
import bisect

from torch.utils.data import ConcatDataset as _TorchConcatDataset
from torch.utils.data import Dataset


class ConcatDataset(_TorchConcatDataset):
    """``torch`` ConcatDataset that also answers ``get_img_info`` (used for aspect-ratio grouping).

    Samples are returned as the member dataset returns them (their index is the member's local index).
    """

    def get_idxs(self, idx: int):
        """``(dataset index, index inside that dataset)`` of global sample ``idx``."""
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return dataset_idx, sample_idx

    def get_img_info(self, idx: int):
        dataset_idx, sample_idx = self.get_idxs(idx)
        return self.datasets[dataset_idx].get_img_info(sample_idx)


class RepeatedDataset(Dataset):
    """``copies`` back-to-back passes over ``dataset`` (sample ``i`` is ``dataset[i % len(dataset)]``).

    Other attributes (``categories``, ``ind_to_class``, ``coco`` ...) are those of the wrapped dataset.
    """

    def __init__(self, dataset, copies: int):
        self.dataset = dataset
        self.copies = copies
        self.length = len(dataset)

    def __len__(self):
        return self.copies * self.length

    def __getitem__(self, index: int):
        return self.dataset[index % self.length]

    def get_img_info(self, index: int):
        return self.dataset.get_img_info(index % self.length)

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
