"""Flickr30k Entities recall on a one-image subset written in the Flickr30k Entities file formats.

Phrase 1 ("people") has two boxes [0,0,10,10] and [20,0,30,10] (merged: [0,0,30,10]); phrase 2 ("vehicles")
[0,20,50,60]; phrase 4 ("clothing" and "other") [2,0,8,3]; phrase 3 has no box and is never evaluated, so
sentence 2 (only phrase 3) is not evaluable.
"""
import pytest
import torch

from glip.evaluation.flickr import FlickrEvaluator, FlickrRecallEvaluator, box_iou, enclosing_box, \
    flickr_post_process, parse_annotation, parse_sentences, write_flickr_results
from glip.structures.bounding_box import BoxList

SENTENCES = """[/EN#1/people A man] rides [/EN#2/vehicles a bike] near [/EN#3/other a tree] .
[/EN#1/people The man] wears [/EN#4/clothing/other a hat] .
[/EN#3/other Trees] .
"""


def _object(name, box=None):
    if box is None:
        return "<object><name>{}</name><nobndbox>1</nobndbox><scene>0</scene></object>".format(name)
    return ("<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>"
            "</bndbox></object>").format(name, *box)


XML = "<annotation><size><width>100</width><height>80</height><depth>3</depth></size>{}</annotation>".format(
    "".join([_object(1, [0, 0, 10, 10]), _object(1, [20, 0, 30, 10]), _object(2, [0, 20, 50, 60]),
             _object(4, [2, 0, 8, 3]), _object(3)]))

MISS = [100, 100, 110, 110]
PREDICTIONS = [
    {"image_id": "100", "sentence_id": 0, "boxes": [
        [MISS, [20, 0, 30, 10], [0, 0, 30, 10]],  # phrase 1: 2nd hits a separate box, 3rd the merged box
        [[0, 20, 50, 60]],  # phrase 2: hit at 1
    ]},
    {"image_id": "100", "sentence_id": 1, "boxes": [
        [[0, 0, 10, 10]],  # phrase 1: hits the first separate box; IoU 1/3 with the merged box
        [MISS] * 6 + [[2, 0, 8, 3]],  # phrase 4: hit at rank 7 -> recall@10 only
    ]},
]


@pytest.fixture
def flickr_root(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "test.txt").write_text("100\n")
    (tmp_path / "Annotations" / "100.xml").write_text(XML)
    (tmp_path / "Sentences" / "100.txt").write_text(SENTENCES)
    return tmp_path


def test_parsers(flickr_root):
    sentences = parse_sentences(flickr_root / "Sentences" / "100.txt")
    assert sentences[0]["sentence"] == "A man rides a bike near a tree ."
    assert sentences[1]["phrases"][1] == {"first_word_index": 3, "phrase": "a hat", "phrase_id": "4",
                                          "phrase_type": ["clothing", "other"]}
    info = parse_annotation(flickr_root / "Annotations" / "100.xml")
    assert info["boxes"]["1"] == [[0, 0, 10, 10], [20, 0, 30, 10]]
    assert info["nobox"] == ["3"] and info["scene"] == []
    assert (info["width"], info["height"]) == (100, 80)
    assert enclosing_box(info["boxes"]["1"]) == [[0, 0, 30, 10]]


def test_box_iou_has_no_plus_one():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)


def test_recall_separate_gt(flickr_root):
    report = FlickrRecallEvaluator(flickr_root, "test").evaluate(PREDICTIONS)
    # phrases (s0 p1, s0 p2, s1 p1, s1 p4): hit@1 = (no, yes, yes, no), @5 = (yes, yes, yes, no), @10 all
    assert report[1]["all"] == 0.5 and report[5]["all"] == 0.75 and report[10]["all"] == 1.0
    assert report[-1]["all"] == 1.0
    assert report[1]["people"] == 0.5 and report[5]["people"] == 1.0
    assert report[1]["vehicles"] == 1.0
    assert report[5]["clothing"] == 0.0 and report[10]["clothing"] == 1.0
    assert report[5]["other"] == 0.0 and report[10]["other"] == 1.0


def test_recall_merged_gt(flickr_root):
    report = FlickrRecallEvaluator(flickr_root, "test", merge_boxes=True).evaluate(PREDICTIONS)
    # s0 p1 now hits at rank 3, s1 p1 never (IoU 1/3)
    assert report[1]["all"] == 0.25 and report[5]["all"] == 0.5 and report[10]["all"] == 0.75
    assert report[-1]["all"] == 0.75
    assert report[10]["people"] == 0.5


def test_missing_sentence_raises(flickr_root):
    with pytest.raises(RuntimeError, match="missing"):
        FlickrRecallEvaluator(flickr_root, "test").evaluate(PREDICTIONS[:1])


def test_post_process_and_summary(flickr_root, tmp_path):
    # sentence 0 has two evaluable phrases; labels are phrase index + 1 (VLDyHead's "plus")
    boxes = BoxList(torch.tensor([[0.0, 20, 50, 60], [20, 0, 30, 10], [100, 100, 110, 110]]), (100, 80))
    boxes.add_field("scores", torch.tensor([0.9, 0.5, 0.7]))
    boxes.add_field("labels", torch.tensor([2, 1, 1]))
    pred = flickr_post_process(boxes, "100", 0, num_phrases=2, plus=1)
    assert pred["boxes"] == [[MISS, [20, 0, 30, 10], [0, 0, 0, 0]], [[0, 20, 50, 60], [0, 0, 0, 0]]]
    assert pred["scores"][0] == pytest.approx([0.7, 0.5])

    evaluator = FlickrEvaluator(flickr_root, "test", output_folder=str(tmp_path / "out"))
    evaluator.update([pred])
    evaluator.update(PREDICTIONS[1:])
    result = evaluator.evaluate()
    score = result.metrics
    assert score["Recall@1_all"] == 0.5 and score["Recall@5_all"] == 0.75 and score["Upper_bound_all"] == 1.0
    assert result.protocol == "flickr" and result.primary == "Recall@1_all" and result.score == 0.5
    rows = (tmp_path / "out" / "bbox.csv").read_text().split("\n")
    assert rows[0] == "metric, avg " and "Recall@1_all, 0.5 " in rows
    write_flickr_results(score, str(tmp_path / "bbox.csv"))
    assert (tmp_path / "bbox.csv").read_text() == (tmp_path / "out" / "bbox.csv").read_text()


def test_process_resizes_to_the_original_image_and_ranks_per_phrase(flickr_root):
    """Boxes per phrase (label - 1) by descending score, each list closed by a zero box, scaled from the 64x32
    network input to the 128x96 original (x2, x3)."""
    prediction = BoxList(torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 20.0, 30.0]]), (64, 32))
    prediction.add_field("labels", torch.tensor([2, 1]))
    prediction.add_field("scores", torch.tensor([0.3, 0.9]))
    target = BoxList(torch.zeros(0, 4), (64, 32))
    target.add_field("orig_size", torch.tensor([96, 128]))
    target.add_field("positive_map_eval", torch.zeros(3, 256))
    target.add_field("original_img_id", 77)
    target.add_field("sentence_id", 4)
    evaluator = FlickrEvaluator(flickr_root, "test", label_offset=1)
    evaluator.process([0], [target], [prediction])
    (flickr,) = evaluator.predictions
    assert flickr["image_id"] == 77 and flickr["sentence_id"] == 4
    assert flickr["boxes"] == [[[20.0, 30.0, 40.0, 90.0], [0.0] * 4], [[2.0, 6.0, 6.0, 12.0], [0.0] * 4], [[0.0] * 4]]
    assert flickr["scores"][0] == pytest.approx([0.9]) and flickr["scores"][1] == pytest.approx([0.3])


def test_from_config_reads_split_gt_type_and_label_offset(flickr_root):
    from glip.config import cfg

    config = cfg.clone()
    config.DATASETS.TEST = ("flickr30k_test",)
    config.DATASETS.FLICKR_GT_TYPE = "merged"
    evaluator = FlickrEvaluator.from_config(config, None, "out", label_offset=0, flickr_path=str(flickr_root))
    assert evaluator.evaluator.imgid2boxes["100"]["1"] == [[0, 0, 30, 10]]
    assert evaluator.evaluator.evaluate(PREDICTIONS)[1]["all"] == 0.25
    assert evaluator.label_offset == 0 and evaluator.output_folder == "out"
    config.DATASETS.TEST = ("flickr30k_val",)
    with pytest.raises(FileNotFoundError):  # the val split's id list is not in the fixture
        FlickrEvaluator.from_config(config, None, label_offset=1, flickr_path=str(flickr_root))
    with pytest.raises(ValueError, match="label_offset"):
        FlickrEvaluator.from_config(config, None, flickr_path=str(flickr_root))
