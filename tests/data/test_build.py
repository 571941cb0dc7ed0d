"""make_data_loader end to end on the reference's trees task (real photo, 37 tree boxes); the schedule length."""
import pytest
from helpers import REFERENCE

from glip.config import cfg as default_cfg
from glip.data.build import make_data_loader, train_iterations
from glip.data.samplers import iterations_for_epochs

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
    trees_cfg.freeze()
    before = trees_cfg.dump()
    loader = make_data_loader(trees_cfg, is_train=True)
    assert trees_cfg.is_frozen() and trees_cfg.dump() == before  # the config is read, not written
    assert len(loader.dataset) == 1 and len(loader.batch_sampler) == 3  # 3 epochs of 1 image, 1 per batch
    assert train_iterations(trees_cfg, len(loader.dataset)) == 3
    batches = list(loader)
    assert len(batches) == 3
    images, targets, positive_map = batches[0].images, batches[0].targets, batches[0].positive_map
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


def test_test_loaders_of_explicit_dataset_names(trees_cfg):
    trees_cfg.freeze()
    loaders = make_data_loader(trees_cfg, is_train=False, dataset_names=["train", "test"])
    assert [len(loader.dataset) for loader in loaders] == [1, 1] and trees_cfg.DATASETS.TEST == ("test",)


def test_distributed_train_loader_pads_small_dataset(trees_cfg):
    trees_cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_EPOCH", 0, "SOLVER.MAX_ITER", 2])
    loader = make_data_loader(trees_cfg, is_train=True, is_distributed=True, num_replicas=2, rank=1)
    batches = list(loader)
    assert len(batches) == 2 and all(len(b.targets) == 1 for b in batches)  # 1 image per process per batch


def test_iterations_for_epochs_rounds_down_as_the_reference():
    assert iterations_for_epochs(12, 100, 8) == 150
    assert iterations_for_epochs(3, 10, 4) == 7  # 30 images / 4 per batch
    assert iterations_for_epochs(1, 3, 4) == 0


def test_train_iterations_from_max_epoch_or_max_iter():
    c = default_cfg.clone()
    c.merge_from_list(["SOLVER.MAX_ITER", 500, "SOLVER.IMS_PER_BATCH", 16, "SOLVER.MAX_EPOCH", 0])
    c.freeze()
    assert train_iterations(c, 1000) == 500
    c.defrost()
    c.SOLVER.MAX_EPOCH = 2
    c.freeze()
    assert train_iterations(c, 1000) == 125 and c.SOLVER.MAX_ITER == 500


def test_options_reach_the_datasets_that_take_them(trees_cfg):
    plain = trees_cfg.clone()
    plain.merge_from_list(["DATASETS.TRAIN_DATASETNAME_SUFFIX", "", "DATASETS.MAX_BOX", 5, "DATASETS.FEW_SHOT", 1])
    dataset = make_data_loader(plain, is_train=True).dataset
    assert type(dataset).__name__ == "COCODataset" and dataset.max_box == 5 and len(dataset) == 1
    grounding = make_data_loader(trees_cfg, is_train=True).dataset
    assert type(grounding).__name__ == "CocoGrounding"
    assert grounding.disable_shuffle and grounding.separation_tokens == ". " and not grounding.one_hot
    assert [c["name"] for c in grounding.coco.dataset["categories"]] == ["tree"]  # OVERRIDE_CATEGORY


def test_an_option_the_dataset_cannot_honour_is_refused_before_reading_files(trees_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("DATASET", str(tmp_path))  # no data there: the refusal comes first
    trees_cfg.merge_from_list(["DATASETS.MAX_BOX", 5])
    with pytest.raises(ValueError, match=r"DATASETS.MAX_BOX is set to 5, but train_grounding \(CocoGrounding\)"):
        make_data_loader(trees_cfg, is_train=True)
    with pytest.raises(FileNotFoundError, match="annotations_soap.json"):
        make_data_loader(trees_cfg, is_train=False)  # MAX_BOX is a training option
