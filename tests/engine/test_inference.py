"""The evaluation loop: sub-batching by padded shape, chunked detection prompts, grounding prompts, any registered
protocol driven through the evaluator interface, and batched evaluation giving the predictions of one image at a
time on a tiny GLIP."""
import json
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE
from helpers.tiny import TINY_BERT_OPTS
from PIL import Image

from glip.config import cfg as default_cfg
from glip.engine import inference as inf
from glip.evaluation import EVALUATORS, DatasetEvaluator, register_evaluator
from glip.evaluation.evaluator import original_size
from glip.structures.bounding_box import BoxList
from glip.structures.image_list import ImageList, to_image_list
from glip.utils import cli

GLIP_T = str(REFERENCE.parent.parent.parent / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", "32", "MODEL.SWINT.DEPTHS", "(1, 1, 1, 1)", "MODEL.SWINT.NUM_HEADS",
             "(1, 2, 4, 8)", "MODEL.SWINT.OUT_CHANNELS", "(32, 64, 128, 256)", "MODEL.DYHEAD.NUM_CONVS", "1",
             "MODEL.DYHEAD.USE_CHECKPOINT", "False", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
             "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"] + TINY_BERT_OPTS
CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
              {"id": 3, "name": "traffic_light", "supercategory": "thing"},
              {"id": 7, "name": "tree", "supercategory": "plant"}]
# (width, height): the 2nd and 3rd share a padded shape at 64/128 px, the others differ.
IMAGE_SIZES = [(160, 120), (120, 160), (121, 161), (200, 90)]


def write_tiny_coco(root, sizes=IMAGE_SIZES):
    """Random images with two boxes each, categories 1/3/7, under `root/tiny/` (COCO json `ann.json`)."""
    gen = torch.Generator().manual_seed(0)
    images, annotations = [], []
    (root / "tiny" / "images").mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        pixels = torch.randint(0, 255, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(root / "tiny" / "images" / f"{i}.png")
        images.append({"id": 10 + i, "file_name": f"{i}.png", "width": w, "height": h})
        for k, cat in enumerate((1, 7) if i % 2 == 0 else (3, 1)):
            box = [5.0 + 10 * k, 8.0 + 5 * k, w / 3, h / 4]
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    (root / "tiny" / "ann.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))


def tiny_cfg(**test_overrides):
    """GLIP-T shrunk by TINY_OPTS, evaluating the generated `test` dataset; `SECTION__KEY=value` overrides."""
    c = cli.merge_config(cli.base_config(), GLIP_T, TINY_OPTS)
    c.DATASETS.REGISTER = type(c)({"test": {"ann_file": "tiny/ann.json", "img_dir": "tiny/images"}})
    c.DATASETS.TEST = ("test",)
    c.TEST.EVAL_TASK = "detection"
    for key, value in test_overrides.items():
        section, name = key.split("__")
        setattr(getattr(c, section), name, value)
    return c


def build_tiny_model():
    """The tiny GLIP, filled with the golden rule (salt "#tiny") and a confident head, in eval mode."""
    from helpers.glip_model import fill_model_

    from glip.modeling.detector import build_detection_model

    model = fill_model_(build_detection_model(tiny_cfg()), salt="#tiny")
    with torch.no_grad():  # a more confident head than the fill rule's, so every image has detections
        model.rpn.head.bias0.fill_(0.0)
        model.rpn.head.log_scale.fill_(0.0)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny_model()


@pytest.fixture
def tiny_setup(tiny_model, tmp_path, monkeypatch):
    """(tiny GLIP, data root) with DATASET pointing at freshly generated COCO data."""
    write_tiny_coco(tmp_path)
    monkeypatch.setenv("DATASET", str(tmp_path))
    return tiny_model, tmp_path


def _run(model, cfg, output_folder=None):
    from glip.data.build import make_data_loader

    loader = make_data_loader(cfg, is_train=False)[0]
    return inf.inference(model, loader, "test", device="cpu", output_folder=output_folder, cfg=cfg, verbose=False)


# --- sub-batching -------------------------------------------------------------------------------------------------

def test_padded_shape_and_split_by_shape():
    assert inf.padded_shape((60, 80), 32) == (64, 96)
    assert inf.padded_shape((64, 65), 32) == (64, 96)
    assert inf.padded_shape((60, 80), 0) == (60, 80)
    images = ImageList(torch.zeros(4, 3, 96, 96), [(60, 80), (90, 90), (64, 70), (96, 96)])
    assert inf.split_by_shape(images, 32) == [[0, 2], [1, 3]]
    assert inf.split_by_shape(images, 0) == [[0], [1], [2], [3]]


def test_sub_batch_is_the_batch_of_those_images_alone():
    gen = torch.Generator().manual_seed(1)
    imgs = [torch.randn(3, 50, 70, generator=gen), torch.randn(3, 90, 40, generator=gen),
            torch.randn(3, 60, 80, generator=gen)]
    batch = to_image_list(imgs, size_divisible=32)
    assert batch.tensors.shape == (3, 3, 96, 96)
    for group in inf.split_by_shape(batch, 32):
        alone = to_image_list([imgs[i] for i in group], size_divisible=32)
        sub = inf.sub_batch(batch, group, 32)
        assert torch.equal(sub.tensors, alone.tensors)
        assert list(sub.image_sizes) == list(alone.image_sizes)
    assert inf.split_by_shape(batch, 32) == [[0, 2], [1]]


# --- prompts and paths with a stub model --------------------------------------------------------------------------

class StubModel(torch.nn.Module):
    """Records each call; returns one box per label of the prompt with score = label / 10."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, captions=None, positive_map=None):
        self.calls.append((tuple(images.tensors.shape), list(captions), dict(positive_map)))
        outs = []
        for h, w in images.image_sizes:
            labels = torch.as_tensor(sorted(positive_map), dtype=torch.int64)
            box = BoxList(torch.tensor([[1.0, 2.0, 10.0, 20.0]]).repeat(len(labels), 1), (w, h))
            box.add_field("labels", labels)
            box.add_field("scores", labels.float() / 10)
            outs.append(box)
        return outs


def test_chunked_detection_prompts_are_concatenated_per_image():
    model = StubModel()
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 60), (50, 64)])
    queries = ["cat. traffic light", "tree"]
    maps = [{1: [1], 2: [3, 4]}, {3: [1]}]
    outs = inf._run_batch(model, images, [None, None], "detection", queries, maps, plus=1, size_divisible=32)
    assert [c[1] for c in model.calls] == [queries[:1] * 2, queries[1:] * 2]
    for out, (h, w) in zip(outs, images.image_sizes):
        assert out.size == (w, h)
        assert out.get_field("labels").tolist() == [1, 2, 3]
        assert torch.allclose(out.get_field("scores"), torch.tensor([0.1, 0.2, 0.3]))


def test_grounding_runs_each_image_with_its_own_caption_and_map():
    model = StubModel()
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    targets = []
    for caption, rows in (("a cat on a mat", [[1, 2], [5]]), ("two dogs", [[2]])):
        target = BoxList(torch.zeros(1, 4), (64, 64))
        pmap = torch.zeros(len(rows), 256)
        for r, toks in enumerate(rows):
            pmap[r, toks] = 1.0
        target.add_field("caption", caption)
        target.add_field("positive_map_eval", pmap)
        targets.append(target)
    outs = inf._run_batch(model, images, targets, "grounding", [None], [None], plus=1, size_divisible=32)
    assert [c[1] for c in model.calls] == [["a cat on a mat"], ["two dogs"]]
    assert model.calls[0][2] == {1: [1, 2], 2: [5]} and model.calls[1][2] == {1: [2]}
    assert [o.get_field("labels").tolist() for o in outs] == [[1, 2], [1]]


def test_label_offset():
    c = default_cfg.clone()
    c.defrost()
    c.MODEL.RPN_ARCHITECTURE = "VLDYHEAD"
    assert inf.label_offset(c) == 1
    c.MODEL.RPN_ARCHITECTURE = "ATSS"
    assert inf.label_offset(c) == 0


# --- a new protocol is one DatasetEvaluator subclass and one registration ----------------------------------------

class BoxWidths(DatasetEvaluator):
    """Toy protocol: how many images were seen and the mean width of their boxes in original pixels."""

    primary_metric = "mean_width"

    def __init__(self, dataset, output_folder=None):
        self.dataset, self.output_folder = dataset, output_folder
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset, output_folder=None, **_):
        return cls(dataset, output_folder)

    def reset(self):
        self.widths, self.indices = [], []

    def process(self, indices, targets, outputs):
        for index, target, output in zip(indices, targets, outputs):
            output = output.resize(original_size(target, self.dataset, index))
            self.widths += (output.bbox[:, 2] - output.bbox[:, 0]).tolist()
            self.indices.append(index)

    def evaluate(self):
        if self.output_folder:
            (Path(self.output_folder) / "widths.txt").write_text(repr(self.widths))
        return self.result({"images": float(len(self.indices)), "mean_width": sum(self.widths) / len(self.widths)},
                           details=self.indices)


class HalfSizeImages(torch.utils.data.Dataset):
    """Zero images of the given (h, w), served at half their original size (`orig_size` = 2x)."""

    evaluation_protocol = "box-widths"

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, index):
        h, w = self.sizes[index]
        return torch.zeros(3, h, w), {"orig_size": torch.tensor([2 * h, 2 * w])}, index

    def get_img_info(self, index):
        h, w = self.sizes[index]
        return {"height": 2 * h, "width": 2 * w}


class HalfWidthBox(torch.nn.Module):
    """Plain detector (EVAL_TASK ""): per image one box from x=0 to half its width."""

    def forward(self, images):
        outs = []
        for h, w in images.image_sizes:
            box = BoxList(torch.tensor([[0.0, 0.0, w / 2, h / 2]]), (w, h))
            box.add_field("scores", torch.ones(1))
            box.add_field("labels", torch.ones(1, dtype=torch.int64))
            outs.append(box)
        return outs


@pytest.fixture
def box_widths_protocol():
    register_evaluator("box-widths")(BoxWidths)
    yield BoxWidths
    del EVALUATORS["box-widths"]


def test_a_registered_toy_protocol_runs_through_inference(box_widths_protocol, tmp_path):
    from glip.data.collate import BatchCollator

    dataset = HalfSizeImages([(20, 40), (30, 16), (24, 24)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=BatchCollator(32))
    cfg = default_cfg.clone()
    cfg.TEST.EVAL_TASK = ""
    result = inf.inference(HalfWidthBox(), loader, "toy", device="cpu", output_folder=str(tmp_path), cfg=cfg,
                           verbose=False)
    assert result.protocol == "box-widths" and result.details == [0, 1, 2]
    # half the width of each image, in original pixels (2x the network input): 40, 16, 24
    assert result.metrics == {"images": 3.0, "mean_width": pytest.approx((40 + 16 + 24) / 3)}
    assert result.score == result.metrics["mean_width"]
    assert (tmp_path / "widths.txt").read_text() == "[40.0, 16.0, 24.0]"
    cfg.TEST.SUBSET = 1  # the first batch only
    assert inf.inference(HalfWidthBox(), loader, "toy", device="cpu", cfg=cfg, verbose=False).details == [0, 1]


def test_a_dataset_without_a_registered_protocol_is_refused_before_running():
    class Undeclared(HalfSizeImages):
        evaluation_protocol = "voc"

    model = HalfWidthBox()
    loader = torch.utils.data.DataLoader(Undeclared([(8, 8)]), batch_size=1)
    with pytest.raises(NotImplementedError, match="'voc'"):
        inf.inference(model, loader, "toy", device="cpu", cfg=default_cfg.clone(), verbose=False)


# --- tiny GLIP end to end -----------------------------------------------------------------------------------------

def _load(path):
    return torch.load(path, weights_only=False)


def _assert_same_predictions(a, b):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        assert pa.size == pb.size and len(pa) == len(pb)
        assert torch.equal(pa.get_field("labels"), pb.get_field("labels"))
        torch.testing.assert_close(pa.bbox, pb.bbox, atol=1e-3, rtol=0)
        torch.testing.assert_close(pa.get_field("scores"), pb.get_field("scores"), atol=1e-5, rtol=0)


def test_batched_evaluation_gives_the_predictions_of_single_images(tiny_setup, tmp_path):
    model, _ = tiny_setup
    _run(model, tiny_cfg(TEST__IMS_PER_BATCH=1), str(tmp_path / "one"))
    result = _run(model, tiny_cfg(TEST__IMS_PER_BATCH=4), str(tmp_path / "three"))
    single, batched = _load(tmp_path / "one/predictions.pth"), _load(tmp_path / "three/predictions.pth")
    assert len(single) == len(IMAGE_SIZES) and all(len(p) > 0 for p in single)
    _assert_same_predictions(single, batched)
    assert json.loads((tmp_path / "one/bbox.json").read_text()) and (tmp_path / "three/bbox.csv").exists()
    assert result.protocol == "coco" and result.score == result.metrics["bbox/AP"] >= 0
    assert result.score == result.details[0].results["bbox"]["AP"]


@pytest.mark.slow
def test_chunked_evaluation_equals_each_chunk_run_alone(tiny_setup, tmp_path):
    """CHUNKED_EVALUATION 2 over 3 categories: per image, the detections of prompt "cat. traffic light" (labels 1,
    2) followed by those of prompt "tree" (label 3), each obtained by calling the model directly. TEST.SUBSET 1
    keeps the first batch (images 0 and 1, no aspect-ratio grouping)."""
    from glip.data.build import make_data_loader

    model, _ = tiny_setup
    cfg = tiny_cfg(TEST__IMS_PER_BATCH=2, TEST__CHUNKED_EVALUATION=2, TEST__SUBSET=1,
                   DATALOADER__ASPECT_RATIO_GROUPING=False)
    _run(model, cfg, str(tmp_path / "chunked"))
    predictions = _load(tmp_path / "chunked/predictions.pth")
    assert len(predictions) == 2
    dataset = make_data_loader(cfg, is_train=False)[0].dataset
    for index, prediction in enumerate(predictions):
        image = to_image_list([dataset[index][0]], size_divisible=32)
        with torch.no_grad():
            first = model(image, captions=["cat. traffic light"], positive_map={1: [1], 2: [3, 4]})[0]
            second = model(image, captions=["tree"], positive_map={3: [1]})[0]
        expected = BoxList.concate_box_list([first, second])
        assert set(first.get_field("labels").tolist()) <= {1, 2}
        assert set(second.get_field("labels").tolist()) <= {3}
        _assert_same_predictions([prediction], [expected])
