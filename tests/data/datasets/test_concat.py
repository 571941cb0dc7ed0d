"""ConcatDataset index mapping and RepeatedDataset (DATASETS.*_COPY)."""
from glip.data.datasets.concat import ConcatDataset, RepeatedDataset


class _Toy:
    def __init__(self, n, tag):
        self.n, self.tag = n, tag
        self.ind_to_class = {1: tag}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)

    def get_img_info(self, i):
        return {"height": i + 1, "width": self.n}


def test_concat_img_info_and_local_indices():
    ds = ConcatDataset([_Toy(2, "a"), _Toy(3, "b")])
    assert len(ds) == 5 and ds[3] == ("b", 1)
    assert ds.get_idxs(0) == (0, 0) and ds.get_idxs(2) == (1, 0)
    assert ds.get_img_info(4) == {"height": 3, "width": 3}


def test_repeated():
    ds = RepeatedDataset(_Toy(3, "a"), 4)
    assert len(ds) == 12 and ds[7] == ("a", 1) and ds.get_img_info(5) == {"height": 3, "width": 3}
    assert ds.ind_to_class == {1: "a"}
