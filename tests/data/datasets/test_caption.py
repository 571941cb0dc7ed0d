"""CaptionTSV / PseudoData on hand-made rows: screening, clipping in the label's frame, v2 spans, redraws of
screened and bad rows, negatives, packing and the MLM span, the inference-caption mode, and registration through
the catalog with the reference's 0-means-default keys."""
import logging

import pytest
import torch
from tiny_datasets import write_caption_tsv

from glip.config import cfg as default_cfg
from glip.config.paths_catalog import DatasetCatalog, register_datasets
from glip.data.build import build_dataset
from glip.data.datasets.caption import CaptionTSV, PseudoData
from glip.data.positive_map import load_tokenizer
from glip.data.transforms import build_transforms

CAPTION = "a dog next to a red ball"  # "dog" = [2, 5), "a red ball" = [14, 24), "red ball" = [16, 24)
ROW_A = {"caption": CAPTION, "img_w": 80, "img_h": 60,
         "bboxes": [[10, 5, 30, 25], [95, 10, 120, 20], [70, 50, 100, 70], [11, 6, 31, 26]],
         "scores": [0.9, 0.8, 0.95, 0.5],
         "tokens_positive": [[[2, 5]], [[16, 24]], [[14, 24]], [[2, 5]]]}
ROW_B = {"caption": "two cats", "bboxes": [[[1, 1, 10, 10], [20, 20, 30, 30]]], "scores": [[0.9, 0.3]],
         "tokens_positive": [[[0, 8]]]}
ROW_EMPTY = {"caption": "nothing here", "img_w": 64, "img_h": 48, "bboxes": [], "scores": [], "tokens_positive": []}


class Draws:
    """Scripted rng: ``randrange`` and ``random`` replay their queues; ``shuffle`` keeps the order."""

    def __init__(self, ranges=(), randoms=()):
        self.ranges, self.randoms = list(ranges), list(randoms)

    def randrange(self, n):
        return self.ranges.pop(0)

    def random(self):
        return self.randoms.pop(0)

    def shuffle(self, items):
        pass


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture
def rows_yaml(tmp_path):
    return write_caption_tsv(tmp_path, [ROW_A, ROW_B, ROW_EMPTY, "not json {"])


def _data(path, tokenizer, **kwargs):
    return CaptionTSV(path, tokenizer=tokenizer, **kwargs)


def test_boxes_are_clipped_in_the_label_frame_and_keep_their_spans(rows_yaml, tokenizer):
    img, target, idx = _data(rows_yaml, tokenizer)[0]
    assert idx == 0 and img.size == (64, 48) and target.size == (80, 60)  # the boxes' frame is img_w x img_h
    # Box 1 clips to [79, 10, 79, 20] (x to [0, w-1]) and is dropped with ITS span; box 2 is clipped.
    assert target.bbox.tolist() == [[10, 5, 30, 25], [70, 50, 79, 59], [11, 6, 31, 26]]
    assert target.get_field("tokens_positive") == [[(2, 5)], [(14, 24)], [(2, 5)]]
    assert target.get_field("caption") == CAPTION and target.get_field("labels").tolist() == [1, 1, 1]
    # Tokens: [CLS] a dog next to a red ball [SEP] -> "dog" is token 2, "a red ball" tokens 5-7.
    positive = target.get_field("positive_map")
    assert positive.shape == (3, 256)
    assert positive[0].nonzero().flatten().tolist() == [2] and positive[1].nonzero().flatten().tolist() == [5, 6, 7]
    assert target.get_field("greenlight_map")[:9].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0]  # whole caption
    assert target.get_field("area").tolist() == pytest.approx([21 * 21, 10 * 10, 21 * 21])


def test_further_screen_confidence_and_nms(rows_yaml, tokenizer):
    # score > 0.5: the 0.5 box goes; no NMS: row order; box 1 then clipped away.
    _, target, _ = _data(rows_yaml, tokenizer, further_screen=True, caption_conf=0.5, caption_nms=-1)[0]
    assert target.bbox.tolist() == [[10, 5, 30, 25], [70, 50, 79, 59]]
    # NMS at 0.5 (nothing overlaps) reorders by score: 0.95, 0.9, (0.8 clipped away).
    _, target, _ = _data(rows_yaml, tokenizer, further_screen=True, caption_conf=0.5, caption_nms=0.5)[0]
    assert target.bbox.tolist() == [[70, 50, 79, 59], [10, 5, 30, 25]]
    assert target.get_field("tokens_positive") == [[(14, 24)], [(2, 5)]]


def test_v2_rows_are_flattened_with_all_spans_of_their_entity(tmp_path, tokenizer):
    path = write_caption_tsv(tmp_path, [ROW_B])
    _, target, _ = _data(path, tokenizer, caption_format_version="v2")[0]
    assert target.size == (64, 48)  # no img_w / img_h: the decoded image's frame
    assert target.bbox.tolist() == [[1, 1, 10, 10], [20, 20, 30, 30]]
    assert target.get_field("tokens_positive") == [[(0, 8)], [(0, 8)]]
    _, target, _ = _data(path, tokenizer, caption_format_version="v2", further_screen=True, caption_conf=0.5)[0]
    assert target.bbox.tolist() == [[1, 1, 10, 10]]


def test_screened_and_bad_rows_draw_another_row_and_are_counted(tmp_path, rows_yaml, tokenizer, caplog):
    data = _data(rows_yaml, tokenizer, rng=Draws(ranges=[0]))
    _, target, idx = data[2]  # no box -> row 0 drawn
    assert idx == 0 and len(target) == 3 and dict(data.skipped) == {"too few boxes": 1}
    data.rng = Draws(ranges=[0])
    with caplog.at_level(logging.WARNING, logger="glip.data.datasets.caption"):
        _, _, idx = data[3]  # not json -> logged, counted, row 0 drawn
    assert idx == 0 and data.skipped["bad row"] == 1
    assert any("row 3 skipped (bad row: label is not json" in r.getMessage() for r in caplog.records)
    # The confidence screen leaving fewer than CAPTION_MIN_BOX boxes also draws again (row 0 has 2 above 0.85).
    data = _data(rows_yaml, tokenizer, further_screen=True, caption_conf=0.85, caption_min_box=3,
                 rng=Draws(ranges=[2, 1, 3, 0] * 30))
    with pytest.raises(RuntimeError, match="100 rows in a row were skipped"):
        data[0]
    # Spans outside the caption make a bad row.
    path = write_caption_tsv(tmp_path / "spans", [dict(ROW_A, tokens_positive=[[[2, 40]]] * 4)])
    data = _data(path, tokenizer, rng=Draws(ranges=[0] * 100))
    with pytest.raises(RuntimeError):
        data[0]
    assert data.skipped["bad row"] == 100


def test_a_drawn_negative_has_another_rows_caption_and_no_box(rows_yaml, tokenizer):
    data = _data(rows_yaml, tokenizer, sample_negative_for_grounding_data=1.0, rng=Draws(ranges=[1], randoms=[0.0]))
    _, target, idx = data[0]
    assert idx == 0 and len(target) == 0 and target.get_field("caption") == "two cats"
    assert target.get_field("positive_map").shape == (0, 256)
    # Drawn with probability 0.3: a draw of 0.3 is not below it.
    _, target, _ = _data(rows_yaml, tokenizer, sample_negative_for_grounding_data=0.3, rng=Draws(randoms=[0.3]))[0]
    assert len(target) == 3


@pytest.mark.parametrize("only_positive", [True, False])
def test_packing_and_the_mlm_span(rows_yaml, tokenizer, only_positive):
    data = _data(rows_yaml, tokenizer, pack_random_caption_number=1, mlm_obj_for_only_positive=only_positive,
                 rng=Draws(ranges=[1]))
    _, target, _ = data[0]
    caption = target.get_field("caption")
    assert caption == CAPTION + ". two cats. "
    assert target.get_field("tokens_positive") == [[(2, 5)], [(14, 24)], [(2, 5)]]  # the positive comes first
    # Tokens: [CLS] a dog next to a red ball . two cats . [SEP]: the positive caption is tokens 1-7.
    expected = [0] + [1] * 7 + ([0] * 4 if only_positive else [1] * 4) + [0]
    assert target.get_field("greenlight_map")[:13].tolist() == expected


def test_inference_caption_rows_give_captions_without_boxes(tmp_path, tokenizer):
    path = write_caption_tsv(tmp_path, [{"caption": "a googlecc caption"}, [{"caption": "a bing caption"}],
                                        {"captions": ["one.", "two."]}])
    data = _data(path, tokenizer, inference_caption=True)
    captions = []
    for i in range(3):
        _, target, _ = data[i]
        assert len(target) == 0
        captions.append(target.get_field("caption"))
    assert captions == ["a googlecc caption", "a bing caption", "one. two."]


def test_image_sizes_from_the_hw_file_or_the_label(tmp_path, rows_yaml, tokenizer):
    data = _data(rows_yaml, tokenizer)
    assert data.get_img_info(0) == {"height": 60, "width": 80} and data.get_img_info(1) is None
    assert data.get_img_id(1) == "key1"
    path = write_caption_tsv(tmp_path / "hw", [ROW_A], sizes=[(64, 40)], hw=True)
    assert _data(path, tokenizer).get_img_info(0) == {"height": 40, "width": 64}


def test_the_yaml_may_declare_its_format_version(tmp_path, tokenizer):
    path = write_caption_tsv(tmp_path, [ROW_B], extra_yaml={"caption_format_version": "v2"})
    assert len(_data(path, tokenizer, caption_format_version="v2")) == 1
    with pytest.raises(ValueError, match="holds caption format v2 but DATASETS.CAPTION_FORMAT_VERSION is v1"):
        _data(path, tokenizer)


def test_pseudo_data_neither_packs_nor_counts_entities_first(tmp_path, tokenizer):
    path = write_caption_tsv(tmp_path, [ROW_A])
    _, target, _ = PseudoData(path, tokenizer=tokenizer)[0]
    assert target.get_field("caption") == CAPTION and len(target) == 3
    with pytest.raises(NotImplementedError, match="DIVER_BOX_FOR_VQA"):
        PseudoData(path, tokenizer=tokenizer, diver_box_for_vqa=True)


def _train_cfg(opts):
    c = default_cfg.clone()
    c.merge_from_list(["DATASETS.TRAIN", ("my_captions",), "INPUT.MIN_SIZE_TRAIN", 96, "INPUT.MAX_SIZE_TRAIN", 128,
                       "AUGMENT.FLIP_PROB_TRAIN", 0.0] + list(opts))
    entry = {"factory": "CaptionTSV", "yaml_file": "caps/captions.yaml"}
    c.DATASETS.REGISTER = type(c.DATASETS)({"my_captions": entry})
    return c


@pytest.mark.parametrize("opts, conf, min_box, pack_prob", [
    ([], 0.9, 1, -1.0),  # the default config: CAPTION_CONF 0.9 passed
    (["DATASETS.CAPTION_CONF", 0.0, "DATASETS.CAPTION_MIN_BOX", 0, "DATASETS.RANDOM_PACK_PROB", 0.0], 0.5, 1, -1.0),
    (["DATASETS.CAPTION_CONF", 0.3, "DATASETS.CAPTION_MIN_BOX", 2, "DATASETS.RANDOM_PACK_PROB", 0.5], 0.3, 2, 0.5),
])
def test_registered_by_name_with_the_reference_key_rules(tmp_path, monkeypatch, tokenizer, opts, conf, min_box,
                                                         pack_prob):
    write_caption_tsv(tmp_path / "data" / "caps", [ROW_A], sizes=[(64, 48)])
    monkeypatch.setenv("DATASET", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(DatasetCatalog, "DATASETS", dict(DatasetCatalog.DATASETS))
    c = _train_cfg(opts)
    register_datasets(c, True)
    (dataset,) = build_dataset(c, c.DATASETS.TRAIN, build_transforms(c, True), DatasetCatalog, True, tokenizer)
    assert isinstance(dataset, CaptionTSV) and dataset.yaml_file == str(tmp_path / "data" / "caps/captions.yaml")
    assert (dataset.caption_conf, dataset.caption_min_box, dataset.random_pack_prob) == (conf, min_box, pack_prob)
    img, target, _ = dataset[0]
    # 64 x 48 image resized to 128 x 96; boxes scaled from the label's 80 x 60 frame by 1.6.
    assert tuple(img.shape) == (3, 96, 128) and target.size == (128, 96)
    assert torch.allclose(target.bbox[0], torch.tensor([16.0, 8.0, 48.0, 40.0]))


def test_caption_keys_apply_to_caption_data_and_are_logged_for_the_rest(caplog):
    from glip.data.dataset_options import check_options, option_values
    from glip.data.datasets.registry import get_factory

    c = default_cfg.clone()
    c.merge_from_list(["DATASETS.FURTHER_SCREEN", True, "DATASETS.PACK_RANDOM_CAPTION_NUMBER", 20,
                       "DATASETS.CAPTION_FORMAT_VERSION", "v2", "MODEL.DYHEAD.FUSE_CONFIG.MLM_OBJ_FOR_ONLY_POSITIVE",
                       True])
    values = option_values(c, True)
    assert values["further_screen"] and values["pack_random_caption_number"] == 20
    assert values["caption_format_version"] == "v2" and values["mlm_obj_for_only_positive"]
    assert "further_screen" not in option_values(c, False)  # train loaders only, as the reference
    with caplog.at_level(logging.INFO, logger="glip.data.dataset_options"):
        check_options(c, True, ["caps", "mixed_train_no_coco"],
                      [get_factory("CaptionTSV"), get_factory("MixedDataset")])
    assert "DATASETS.PACK_RANDOM_CAPTION_NUMBER is set; it does not apply to mixed_train_no_coco" in caplog.text
    # PseudoData does not pack: the packing keys do not reach it (logged), the screening keys do.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glip.data.dataset_options"):
        check_options(c, True, ["pseudo"], [get_factory("PseudoData")])
    assert "PACK_RANDOM_CAPTION_NUMBER is set; it does not apply to pseudo (PseudoData)" in caplog.text
    assert "FURTHER_SCREEN" not in caplog.text
    refused = default_cfg.clone()
    refused.merge_from_list(["DATASETS.DIVER_BOX_FOR_VQA", True])
    with pytest.raises(ValueError, match="DATASETS.DIVER_BOX_FOR_VQA is set to True, but caps \\(CaptionTSV\\)"):
        check_options(refused, True, ["caps"], [get_factory("CaptionTSV")])


def test_a_bad_frame_is_a_bad_row(tmp_path, tokenizer):
    path = write_caption_tsv(tmp_path, [dict(ROW_A, img_w="wide"), dict(ROW_A, img_h=0), ROW_A])
    data = _data(path, tokenizer, rng=Draws(ranges=[1, 2]))
    _, target, idx = data[0]
    assert idx == 2 and data.skipped["bad row"] == 2 and target.size == (80, 60)
