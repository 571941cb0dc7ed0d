"""The pseudo-labeler: a batch of images with different captions gives each image the detections it gets alone
through GLIPDemo; kept boxes are those above the threshold, each with its phrase's span; unusable pairs are
skipped with a reason; a shard resumes without redoing committed pairs."""
import base64
import io

import numpy as np
import pytest
import torch
from helpers.teacher import write_teacher
from PIL import Image

from glip.config import cfg as default_cfg
from glip.data.caption_writer import committed_keys
from glip.data.transforms import build_transforms
from glip.engine.caption_pairs import Pair
from glip.engine.predictor import GLIPDemo
from glip.engine.pseudo_labeling import PseudoLabeler, detect_with_captions, image_outputs, label_shard

CAPTIONS = ["a red circle to the left of a blue square", "two green stars and a cat", "a yellow triangle"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    config, weight = write_teacher(tmp_path_factory.mktemp("teacher"))
    cfg = default_cfg.clone()
    cfg.merge_from_file(str(config))
    cfg.MODEL.WEIGHT = str(weight)
    return GLIPDemo(cfg, load_model=True)


def _image(seed, w=96, h=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _pair(key, caption, image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    return Pair(key, caption, lambda: (b64, Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")))


def test_image_outputs_slices_a_batch():
    outputs = {"box_cls": [torch.arange(6.0).reshape(3, 2)], "anchors": [["a0"], ["a1"], ["a2"]], "lang": None,
               "centerness": torch.arange(3.0)}
    one = image_outputs(outputs, 1)
    assert one["box_cls"][0].tolist() == [[2.0, 3.0]] and one["anchors"] == [["a1"]]
    assert one["centerness"].tolist() == [1.0] and one["lang"] is None


def test_a_batch_of_captions_equals_each_image_alone(demo):
    images = [_image(i) for i in range(3)]
    transforms = build_transforms(demo.cfg, is_train=False)
    prompts, spans = [], []
    for caption in CAPTIONS:
        from glip.engine.phrases import extract_phrases

        phrases = extract_phrases(caption, "rules")
        spans.append([{"char_bounds": (p.beg, p.end)} for p in phrases])
        prompts.append(demo.build_prompts(caption, spans[-1])[0])
    batched = detect_with_captions(demo.model, [transforms(im) for im in images], CAPTIONS,
                                   [p.label_to_token for p in prompts], 32, demo.device)
    for image, caption, entity, got in zip(images, CAPTIONS, spans, batched):
        alone = demo.compute_prediction(np.asarray(image)[:, :, ::-1].copy(), caption, entity)
        assert len(got) == len(alone) > 0
        torch.testing.assert_close(got.bbox, alone.bbox, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got.get_field("scores"), alone.get_field("scores"), rtol=1e-4, atol=1e-5)
        assert torch.equal(got.get_field("labels"), alone.get_field("labels"))


def test_kept_boxes_carry_their_phrase_spans(demo):
    transforms = build_transforms(demo.cfg, is_train=False)
    pairs = [_pair("k{}".format(i), c, _image(i)) for i, c in enumerate(CAPTIONS)]
    everything = PseudoLabeler(demo, transforms, threshold=0.0, phrase_method="rules").label(pairs)
    first = everything[0]
    assert first.skip is None and first.phrases == ["a red circle", "the left", "a blue square"]
    record = first.record
    assert (record["img_w"], record["img_h"]) == (96, 64) and record["caption"] == CAPTIONS[0]
    assert len(record["bboxes"]) == len(record["scores"]) == len(record["tokens_positive"]) == 5  # DETECTIONS_PER_IMG
    assert record["scores"] == sorted(record["scores"], reverse=True)
    for spans, name in zip(record["tokens_positive"], first.names):
        assert CAPTIONS[0][spans[0][0]:spans[0][1]] == name
    # A threshold between the scores keeps exactly the boxes scoring above it.
    assert record["scores"] == [round(s, 4) for s in first.scores]  # the label json rounds
    assert first.scores[1] - first.scores[2] > 1e-5
    middle = (first.scores[1] + first.scores[2]) / 2  # a batch of one scores within 1e-7 of a batch of three
    kept = PseudoLabeler(demo, transforms, threshold=middle, phrase_method="rules").label(pairs[:1])[0]
    assert list(kept.scores) == pytest.approx(first.scores[:2], abs=1e-6)
    none = PseudoLabeler(demo, transforms, threshold=1.0, phrase_method="rules").label(pairs[:1])[0]
    assert none.record is None and none.skip == "no box above the threshold" and none.phrases == first.phrases
    assert PseudoLabeler(demo, transforms, threshold=1.0, keep_empty=True).label(pairs[:1])[0].record["bboxes"] == []


def test_unusable_pairs_are_skipped_with_a_reason(demo):
    transforms = build_transforms(demo.cfg, is_train=False)

    def broken():
        raise OSError("truncated file")

    pairs = [Pair("bad", "a cat", broken), _pair("none", "and then of the", _image(0)),
             _pair("long", " ".join(["a dog"] * 40), _image(1)), _pair("ok", "a cat", _image(2, w=64, h=96))]
    results = PseudoLabeler(demo, transforms, threshold=0.0, phrase_method="rules").label(pairs)
    assert [r.skip for r in results] == ["unreadable image", "no phrase", "caption longer than MAX_QUERY_LEN tokens",
                                         None]
    assert results[3].record["img_w"] == 64  # another input shape: its own batch


def test_a_shard_resumes_after_the_last_commit(demo, tmp_path):
    transforms = build_transforms(demo.cfg, is_train=False)
    pairs = [_pair("k{}".format(i), CAPTIONS[i % 3], _image(i)) for i in range(5)]
    labeler = PseudoLabeler(demo, transforms, threshold=0.0, phrase_method="rules")

    class Crash(Exception):
        pass

    class CrashingLabeler(PseudoLabeler):
        calls = 0

        def label(self, batch):
            CrashingLabeler.calls += 1
            if CrashingLabeler.calls == 2:
                raise Crash()
            return super().label(batch)

    crashing = CrashingLabeler(demo, transforms, threshold=0.0, phrase_method="rules")
    with pytest.raises(Crash):
        label_shard(crashing, pairs, str(tmp_path / "shards"), batch_size=2, progress=False)
    assert committed_keys(str(tmp_path / "shards")) == {"k0", "k1"}
    label_shard(labeler, pairs, str(tmp_path / "shards"), batch_size=2, progress=False)
    keys = [line.split("\t")[0] for line in (tmp_path / "shards" / "part000of001.label.tsv").read_text().splitlines()]
    assert keys == ["k0", "k1", "k2", "k3", "k4"]
    # A second shard of two processes skips the pairs the first one already holds.
    assert len(committed_keys(str(tmp_path / "shards"))) == 5
