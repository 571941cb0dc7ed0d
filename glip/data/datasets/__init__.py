"""Dataset classes; importing this package registers each one as a dataset factory (``registry``) under the name
the catalog entries give as their ``factory``."""
from glip.data.datasets.caption import CaptionTSV, PseudoData
from glip.data.datasets.coco import COCODataset
from glip.data.datasets.coco_grounding import CocoGrounding
from glip.data.datasets.concat import ConcatDataset, RepeatedDataset
from glip.data.datasets.lvis import LvisDetection
from glip.data.datasets.modulated import FlickrDataset, MixedDataset, ModulatedDataset
from glip.data.datasets.registry import DATASET_FACTORIES, get_factory, register_dataset, resolve_dataset
from glip.data.datasets.tsv import CocoDetectionTSV, Object365DetectionTSV, ODTSVDataset

__all__ = [
    "CaptionTSV", "PseudoData", "COCODataset", "CocoGrounding", "ConcatDataset", "RepeatedDataset", "LvisDetection",
    "FlickrDataset", "MixedDataset", "ModulatedDataset", "CocoDetectionTSV", "Object365DetectionTSV", "ODTSVDataset",
    "DATASET_FACTORIES", "get_factory", "register_dataset", "resolve_dataset",
]
