"""Dataset classes, by the factory names the path catalog uses (``DatasetCatalog.get(name)["factory"]``)."""
from glip.data.datasets.coco import COCODataset
from glip.data.datasets.coco_grounding import CocoGrounding
from glip.data.datasets.concat import ConcatDataset, RepeatedDataset
from glip.data.datasets.lvis import LvisDetection
from glip.data.datasets.modulated import FlickrDataset, MixedDataset, ModulatedDataset
from glip.data.datasets.tsv import CocoDetectionTSV, Object365DetectionTSV, ODTSVDataset

__all__ = [
    "COCODataset", "CocoGrounding", "ConcatDataset", "RepeatedDataset", "LvisDetection", "FlickrDataset",
    "MixedDataset", "ModulatedDataset", "CocoDetectionTSV", "Object365DetectionTSV", "ODTSVDataset",
]
