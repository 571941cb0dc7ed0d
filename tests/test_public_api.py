"""`import glip` is cheap and exposes the entry points a user needs; the reference's module paths still work."""
import subprocess
import sys
from pathlib import Path

import pytest

import glip

REPO = Path(__file__).resolve().parents[1]
GLIP_T = REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml"


def test_import_glip_loads_neither_torch_nor_transformers():
    code = "import sys, glip; print(sorted(m for m in ('torch', 'transformers', 'yacs') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name, module", sorted(glip.EXPORTS.items()))
def test_each_entry_point_is_the_object_of_its_module(name, module):
    import importlib

    assert name in glip.__all__ and name in dir(glip)
    assert getattr(glip, name) is getattr(importlib.import_module(module), name)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'build_model'"):
        glip.build_model


def test_get_config_merges_file_then_options_and_freezes():
    from glip.config import cfg as defaults

    before = defaults.dump()
    cfg = glip.get_config(GLIP_T, ["MODEL.DEVICE", "cpu", "TEST.IMS_PER_BATCH", 2])
    assert cfg.is_frozen() and cfg.MODEL.DEVICE == "cpu" and cfg.TEST.IMS_PER_BATCH == 2
    assert cfg.MODEL.SWINT.EMBED_DIM == 96  # from the yaml
    assert defaults.dump() == before and glip.get_config().dump() == before


def test_package_names_of_the_reference():
    from glip.data.build import make_data_loader
    from glip.data.collate import Batch
    from glip.engine.run import train
    from glip.modeling.detector import build_detection_model
    from glip.solver.build import make_lr_scheduler, make_optimizer
    from glip.structures.bounding_box import BoxList

    assert glip.data.make_data_loader is make_data_loader and glip.data.Batch is Batch
    assert glip.engine.train is train and glip.modeling.build_detection_model is build_detection_model
    assert glip.solver.make_optimizer is make_optimizer and glip.solver.make_lr_scheduler is make_lr_scheduler
    assert glip.structures.BoxList is BoxList
    from glip.data import datasets  # a submodule is still found behind the lazy names

    assert datasets.__name__ == "glip.data.datasets"
