"""Caption TSV writing: label json layouts, commits that survive a kill (uncommitted bytes dropped on reopening),
and several shards merged into one dataset that CaptionTSV reads with no conversion."""
import json

import pytest
from tiny_datasets import image_b64

from glip.data.caption_writer import ShardWriter, committed_keys, label_record, merge_shards, shard_names
from glip.data.datasets.caption import CaptionTSV
from glip.data.positive_map import load_tokenizer


def test_label_records_per_box_and_per_entity():
    caption = "a dog and a cat"
    boxes = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    spans = [[[0, 5]], [[10, 15]], [[0, 5]]]
    v1 = label_record(caption, (40, 30), boxes, [0.9, 0.8, 0.7], spans)
    assert v1 == {"caption": caption, "img_w": 40, "img_h": 30, "bboxes": boxes, "scores": [0.9, 0.8, 0.7],
                  "tokens_positive": spans}
    v2 = label_record(caption, (40, 30), boxes, [0.9, 0.8, 0.7], spans, version="v2")
    assert v2["bboxes"] == [[[1, 2, 3, 4], [9, 10, 11, 12]], [[5, 6, 7, 8]]]
    assert v2["scores"] == [[0.9, 0.7], [0.8]] and v2["tokens_positive"] == [[[0, 5]], [[10, 15]]]
    with pytest.raises(ValueError, match="v3"):
        label_record(caption, (40, 30), boxes, [0.9, 0.8, 0.7], spans, version="v3")


def _record(i):
    return label_record("a thing number {}".format(i), (32, 24), [[1, 1, 20, 20]], [0.9], [[[2, 7]]])


def test_a_reopened_shard_keeps_only_committed_rows(tmp_path):
    writer = ShardWriter(str(tmp_path), "part")
    writer.add("k0", image_b64(32, 24, 0), _record(0), images=1, boxes=1)
    writer.add("k1", None, None, images=1)  # handled, nothing written
    writer.commit()
    writer.add("k2", image_b64(32, 24, 2), _record(2), images=1, boxes=1)  # never committed
    writer.files["label"].write(b"k3\t{\"capt")  # a kill in the middle of a row
    for f in writer.files.values():
        f.flush()
    assert committed_keys(str(tmp_path)) == {"k0", "k1"}

    reopened = ShardWriter(str(tmp_path), "part")
    assert reopened.done_keys() == ["k0", "k1"] and reopened.counts == {"images": 1 + 1, "boxes": 1}
    reopened.add("k2", image_b64(32, 24, 2), _record(2), images=1, boxes=1)
    yaml_path = reopened.close()
    labels = (tmp_path / "part.label.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in labels] == ["k0", "k2"]
    assert json.loads(labels[1].split("\t")[1])["caption"] == "a thing number 2"
    data = CaptionTSV(yaml_path, tokenizer=load_tokenizer())
    assert len(data) == 2 and data.get_img_id(1) == "k2" and data.get_img_info(1) == {"height": 24, "width": 32}


def test_shards_merge_into_one_dataset(tmp_path):
    shards = tmp_path / "shards"
    for rank in range(2):
        writer = ShardWriter(str(shards), "part{}of2".format(rank), version="v2")
        for i in range(rank, 5, 2):
            record = label_record("a thing number {}".format(i), (32, 24), [[1, 1, 20, 20]], [0.9], [[[2, 7]]],
                                  version="v2")
            writer.add("k{}".format(i), image_b64(32, 24, i), record)
        writer.close()
    assert shard_names(str(shards)) == ["part0of2", "part1of2"]
    yaml_path = merge_shards(str(shards), shard_names(str(shards)), str(tmp_path), "v2")
    data = CaptionTSV(yaml_path, tokenizer=load_tokenizer(), caption_format_version="v2")
    assert [data.get_img_id(i) for i in range(len(data))] == ["k0", "k2", "k4", "k1", "k3"]
    _, target, _ = data[4]
    assert target.get_field("caption") == "a thing number 3" and target.bbox.tolist() == [[1, 1, 20, 20]]
    # One shard: the dataset yaml names its files, nothing is copied.
    one = tmp_path / "one"
    one.mkdir()
    merge_shards(str(shards), ["part0of2"], str(one), "v2")
    assert "shards/part0of2.label.tsv" in (one / "dataset.yaml").read_text() and not (one / "label.tsv").exists()
