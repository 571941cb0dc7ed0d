"""Names the reference's users rely on, on a tiny generated dataset: `make_data_loader(cfg, is_train=True,
is_distributed=False)`, a training sample's `caption` (after the transforms) and `positive_map` (boxes x
MAX_QUERY_LEN), and the loss-dict keys the trainer logs."""
import logging

import pytest
import torch
from helpers.tiny import tiny_glip_config
from tiny_datasets import write_coco

from glip.data.build import make_data_loader

FUSE = "MODEL.DYHEAD.FUSE_CONFIG."
CATEGORIES = [{"id": 1, "name": "left hand"}, {"id": 2, "name": "bright lamp"}]


def _cfg(root, *opts):
    images = [{"id": i + 1, "file_name": "{}.jpg".format(i), "width": 64, "height": 48} for i in range(2)]
    anns = [{"image_id": i + 1, "bbox": [4.0 + 10 * k, 5.0, 20.0, 30.0], "category_id": k + 1}
            for i in range(2) for k in range(2)]
    write_coco(root / "tiny", images, anns, CATEGORIES)
    cfg = tiny_glip_config(
        "DATASETS.TRAIN", ("tiny_train",), "DATASETS.TRAIN_DATASETNAME_SUFFIX", "_grounding",
        "DATASETS.DISABLE_SHUFFLE", True, "DATASETS.SEPARATION_TOKENS", ". ", "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 1, "SOLVER.MAX_EPOCH", 0, "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", 48,
        "INPUT.MAX_SIZE_TRAIN", 64, "AUGMENT.MULT_MIN_SIZE_TRAIN", (), "AUGMENT.FLIP_PROB_TRAIN", 1.0, *opts)
    cfg.DATASETS.REGISTER = type(cfg)({"tiny_train": {"ann_file": "tiny/ann.json", "img_dir": "tiny/images"}})
    return cfg


@pytest.mark.parametrize("swap", [False, True])
def test_training_sample_carries_caption_and_positive_map(tmp_path, monkeypatch, swap):
    monkeypatch.setenv("DATASET", str(tmp_path))
    cfg = _cfg(tmp_path, "AUGMENT.FLIP_SWAP_LEFT_RIGHT", swap)
    loader = make_data_loader(cfg, is_train=True, is_distributed=False)
    images, targets, _, positive_map, _, greenlight = next(iter(loader))
    tokenizer = loader.dataset.tokenizer
    first = "right hand" if swap else "left hand"
    for target in targets:
        caption = target.get_field("caption")
        assert caption == first + ". bright lamp"       # the caption after the (forced) flip
        rows = target.get_field("positive_map")
        assert rows.shape == (len(target), cfg.MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN)
        ids = tokenizer(caption)["input_ids"]
        names = [first, "bright lamp"]
        for row, label in zip(rows, target.get_field("labels").tolist()):
            assert tokenizer.decode([ids[t] for t in torch.nonzero(row).flatten().tolist()]) == names[label - 1]
    assert positive_map.shape == (4, 256) and greenlight.shape == (2, 256)


def test_trainer_logs_the_reference_loss_names(tmp_path, monkeypatch, caplog):
    from glip.engine.checkpointer import Checkpointer
    from glip.engine.trainer import do_train, train_options
    from glip.modeling.detector import build_detection_model
    from glip.solver.build import make_lr_scheduler, make_optimizer

    monkeypatch.setenv("DATASET", str(tmp_path))
    cfg = _cfg(tmp_path, FUSE + "MLM_LOSS", True, FUSE + "USE_TOKEN_LOSS", True,
               FUSE + "USE_SHALLOW_CONTRASTIVE_LOSS", True, "SOLVER.USE_AMP", False)
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(tmp_path / "out"), save_to_disk=False)
    loader = make_data_loader(cfg, is_train=True, is_distributed=False)
    with caplog.at_level(logging.INFO, logger="glip.trainer"):
        do_train(model, loader, optimizer, scheduler, checkpointer, torch.device("cpu"), {"iteration": 0},
                 train_options(cfg, cfg.SOLVER.MAX_ITER))
    lines = [r.message for r in caplog.records if "iter: 1" in r.message]
    assert lines
    for name in ("loss_reg", "loss_centerness", "loss_cls", "loss_token", "loss_dot_product_token", "mlm_loss",
                 "loss_shallow_contrastive"):
        assert name + ":" in lines[-1], name
