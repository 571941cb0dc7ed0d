"""The evaluator interface: EvalResult, the protocol registry, the dataset's declared protocol, shared helpers."""
from types import SimpleNamespace

import pytest
import torch

from glip.data.datasets import COCODataset, CocoGrounding, FlickrDataset, LvisDetection, MixedDataset, \
    ODTSVDataset, RepeatedDataset
from glip.evaluation import EVALUATORS, DatasetEvaluator, EvalResult, build_evaluator, evaluator_class, \
    protocol_of, register_evaluator
from glip.evaluation.coco import CocoEvaluator
from glip.evaluation.evaluator import indexed_predictions, original_size
from glip.evaluation.flickr import FlickrEvaluator
from glip.evaluation.lvis import LvisEvaluator
from glip.structures.bounding_box import BoxList


def test_eval_result_score_is_the_primary_metric():
    result = EvalResult("lvis", {"AP": 0.25, "AP50": 0.5}, "AP")
    assert result.score == 0.25
    with pytest.raises(KeyError):
        _ = EvalResult("coco", {"bbox/AP50": 0.5}, "bbox/AP").score


def test_registry_holds_one_class_per_protocol():
    assert EVALUATORS["coco"] is CocoEvaluator and EVALUATORS["lvis"] is LvisEvaluator
    assert EVALUATORS["flickr"] is FlickrEvaluator
    assert [cls.protocol for cls in (CocoEvaluator, LvisEvaluator, FlickrEvaluator)] == ["coco", "lvis", "flickr"]
    assert (CocoEvaluator.primary_metric, LvisEvaluator.primary_metric, FlickrEvaluator.primary_metric) == \
        ("bbox/AP", "AP", "Recall@1_all")
    with pytest.raises(KeyError):
        register_evaluator("coco")(CocoEvaluator)
    with pytest.raises(NotImplementedError, match="no evaluator is registered for protocol 'voc'"):
        evaluator_class("voc")


def test_dataset_classes_declare_their_protocol():
    for cls in (COCODataset, CocoGrounding, MixedDataset):
        assert cls.evaluation_protocol == "coco"
    assert LvisDetection.evaluation_protocol == "lvis"
    assert FlickrDataset.evaluation_protocol == "flickr"
    assert not hasattr(ODTSVDataset, "evaluation_protocol")  # no gt to evaluate against: refused by name


def test_protocol_of_reads_the_declaration_through_wrappers():
    class Declared(torch.utils.data.Dataset):
        evaluation_protocol = "lvis"

        def __len__(self):
            return 3

    assert protocol_of(Declared()) == "lvis"
    assert protocol_of(RepeatedDataset(Declared(), 2)) == "lvis"
    with pytest.raises(NotImplementedError, match="SimpleNamespace declares no evaluation_protocol"):
        protocol_of(SimpleNamespace(coco=None))


def test_build_evaluator_passes_the_options_that_apply():
    from glip.config import cfg

    dataset = SimpleNamespace(evaluation_protocol="coco")
    evaluator = build_evaluator(cfg, dataset, "out", iou_types=("bbox",), box_only=False,
                                expected_results=(("bbox", "AP", (0.5, 0.1)),), expected_results_sigma_tol=2,
                                label_offset=1)
    assert isinstance(evaluator, CocoEvaluator) and evaluator.output_folder == "out"
    assert evaluator.expected_results_sigma_tol == 2 and evaluator.dataset is dataset
    with pytest.raises(NotImplementedError, match="only bbox"):
        build_evaluator(cfg, dataset, None, iou_types=("bbox", "segm"))
    with pytest.raises(NotImplementedError, match="box_only"):
        build_evaluator(cfg, dataset, None, box_only=True)


def test_original_size_from_target_or_dataset():
    class DS:
        def get_img_info(self, index):
            return {"width": 300 + index, "height": 200}

    assert original_size({"orig_size": torch.tensor([480, 640])}, DS(), 0) == (640, 480)
    assert original_size(None, DS(), 1) == (301, 200)
    target = BoxList(torch.zeros(0, 4), (10, 10))
    assert original_size(target, DS(), 2) == (302, 200)
    target.add_field("orig_size", torch.tensor([7, 9]))
    assert original_size(target, DS(), 2) == (9, 7)


def test_indexed_predictions_of_lists_and_dicts():
    assert indexed_predictions(["a", "b"]) == [(0, "a"), (1, "b")]
    assert indexed_predictions({3: "c", 1: "a"}) == [(1, "a"), (3, "c")]


def test_base_class_methods_are_abstract():
    evaluator = DatasetEvaluator()
    for call in (evaluator.reset, evaluator.evaluate, lambda: evaluator.process([], [], [])):
        with pytest.raises(NotImplementedError):
            call()
