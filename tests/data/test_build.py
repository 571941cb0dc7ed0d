"""make_data_loader end to end on the reference's trees task (real photo, 37 tree boxes)."""
import pytest
from helpers import REFERENCE

from glip.config import cfg as default_cfg
from glip.data.build import make_data_loader

TREES = REFERENCE / "end_to_end"


@pytest.fixture
def trees_cfg(monkeypatch):
    monkeypatch.setenv("DATASET", str(TREES))
    cfg = default_cfg.clone()
    cfg.merge_from_file(str(TREES / "trees_train.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding", "DATASETS.USE_OVERRIDE_CATEGORY", True,
        "DATASETS.DISABLE_SHUFFLE", True, "DATASETS.SEPARATION_TOKENS", ". ", "INPUT.MIN_SIZE_TRAIN", 320,
        "INPUT.MAX_SIZE_TRAIN", 512, "AUGMENT.MULT_MIN_SIZE_TRAIN", (), "AUGMENT.FLIP_PROB_TRAIN", 0.0,
        "SOLVER.IMS_PER_BATCH", 1, "SOLVER.MAX_EPOCH", 3, "TEST.IMS_PER_BATCH", 1,
    ])
    return cfg


def test_train_loader_trees(trees_cfg):
    loader = make_data_loader(trees_cfg, is_train=True)
    assert trees_cfg.SOLVER.MAX_ITER == 3 and trees_cfg.SOLVER.DATASET_LENGTH == 1
    batches = list(loader)
    assert len(batches) == 3
    images, targets, ids, positive_map, positive_map_eval, greenlight = batches[0]
    assert images.tensors.shape == (1, 3, 320, 320) and images.image_sizes == [(320, 320)]
    target = targets[0]
    assert target.get_field("caption") == "tree"
    n = len(target)
    assert n == len(target.get_field("boxes")) and n > 30
    assert positive_map.shape == (n, 256)
    assert positive_map[:, 1].eq(1).all() and positive_map.sum() == n
    assert target.bbox.max() <= 320 and target.get_field("labels").eq(1).all()


def test_test_loader_trees(trees_cfg):
    loaders = make_data_loader(trees_cfg, is_train=False)
    assert len(loaders) == 1
    dataset = loaders[0].dataset
    assert type(dataset).__name__ == "COCODataset"
    assert dataset.categories() == {1: "tree"}


def test_distributed_train_loader_pads_small_dataset(trees_cfg):
    trees_cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_EPOCH", 0, "SOLVER.MAX_ITER", 2])
    loader = make_data_loader(trees_cfg, is_train=True, is_distributed=True, num_replicas=2, rank=1)
    batches = list(loader)
    assert len(batches) == 2 and all(len(b[1]) == 1 for b in batches)  # 1 image per process per batch
