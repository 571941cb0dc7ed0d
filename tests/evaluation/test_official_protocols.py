"""Every official config's test sets select the same evaluation protocol as the reference's rule did.

The reference chose the evaluator from the NAME of `DATASETS.TEST[0]` ("flickr" -> Flickr30k recall, "lvis" ->
LVIS Fixed AP), and otherwise from the dataset's class (LVIS datasets -> LVIS, COCO-json datasets -> COCO). Now
the dataset class declares `evaluation_protocol`. For each config under configs/ (task configs merged over
GLIP-T, as `test_grounding_net --task_config` does), each test set is resolved through the catalog to its factory
class; the declared protocol must equal the reference's rule and the benchmark the config's folder belongs to.
"""
from pathlib import Path

import pytest

from glip.config import cfg as default_cfg
from glip.config.paths_catalog import DatasetCatalog, register_datasets
from glip.data import datasets as D

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GLIP_T = CONFIGS / "pretrain" / "glip_Swin_T_O365_GoldG.yaml"
TASK_FOLDERS = ("coco", "flickr", "lvis", "odinw_13", "odinw_35")
BENCHMARK = {"coco": "coco", "flickr": "flickr", "lvis": "lvis", "odinw_13": "coco", "odinw_35": "coco",
             "pretrain": "coco", "quickstart": "coco"}
CONFIG_FILES = sorted(CONFIGS.rglob("*.yaml"))


def reference_rule(first_test_name: str, factory) -> str:
    """The protocol the reference's `inference` picked (EVAL_TASK "detection" or "grounding")."""
    if "flickr" in first_test_name:
        return "flickr"
    if "lvis" in first_test_name:
        return "lvis"
    if factory.__name__.lower().startswith("lvis"):
        return "lvis"
    if issubclass(factory, D.coco_base.CocoJsonBase):  # datasets with a pycocotools `coco`
        return "coco"
    raise AssertionError("the reference could not evaluate {}".format(factory.__name__))


def merged_config(path: Path):
    cfg = default_cfg.clone()
    if path.parent.name in TASK_FOLDERS:
        cfg.merge_from_file(str(GLIP_T))
    cfg.merge_from_file(str(path))
    return cfg


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty working directory and $DATASET root; the catalog is restored afterwards."""
    work, root = tmp_path / "work", tmp_path / "datasets"
    work.mkdir()
    root.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DATASET", str(root))
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    return root


def factory_of(name: str, root: Path):
    """The dataset class the catalog builds `name` with (its relative paths created as folders under `root`)."""
    for value in DatasetCatalog.DATASETS[name].values():
        if isinstance(value, str):
            (root / value).mkdir(parents=True, exist_ok=True)
    return getattr(D, DatasetCatalog.get(name)["factory"])


def test_every_task_folder_is_walked():
    folders = {p.parent.name for p in CONFIG_FILES}
    assert set(TASK_FOLDERS) <= folders and folders <= set(BENCHMARK)
    assert sum(p.parent.name.startswith("odinw") for p in CONFIG_FILES) == 13 + 36


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[str(p.relative_to(CONFIGS)) for p in CONFIG_FILES])
def test_official_config_selects_the_reference_protocol(path, data_root):
    cfg = merged_config(path)
    register_datasets(cfg, is_train=False)
    names = list(cfg.DATASETS.TEST)
    assert names, "no test set"
    for name in names:
        factory = factory_of(name + cfg.DATASETS.TEST_DATASETNAME_SUFFIX, data_root)
        declared = factory.evaluation_protocol
        assert declared == reference_rule(names[0], factory) == BENCHMARK[path.parent.name], (name, factory)
