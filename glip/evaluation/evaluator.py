"""The evaluator interface: one `DatasetEvaluator` subclass per protocol, chosen by the dataset's declared kind.

A dataset class declares its protocol with a class attribute, e.g. `evaluation_protocol = "lvis"`; `EVALUATORS`
maps a protocol name to its evaluator class (`@register_evaluator("lvis")`). The inference loop
(`glip.engine.inference.inference`) drives any of them, as detectron2's `inference_on_dataset` does:

    evaluator.reset()
    for each batch: evaluator.process(indices, targets, outputs)
    result = evaluator.evaluate()   # EvalResult on the main process, None elsewhere

`outputs` are per-image `BoxList`s in network-input pixels (fields `scores`, `labels`); each evaluator resizes
them to the original image size itself, gathers its state over processes and writes its own files.
Adding a protocol is one subclass, one registration and one `evaluation_protocol` line on the dataset class.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

import torch


@dataclass
class EvalResult:
    """What one evaluation returns: `metrics` by name (ordered as the protocol reports them), the name of the
    `primary` metric (monitoring, autostep, best-model selection) and protocol-specific `details`
    (COCO: `(COCOResults, coco_results)`)."""

    protocol: str
    metrics: Dict[str, float]
    primary: str
    details: Any = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """The primary metric's value."""
        return float(self.metrics[self.primary])


class DatasetEvaluator:
    """Base class of the evaluation protocols (see the module docstring).

    Subclasses set `primary_metric`, implement the three methods and a `from_config` adapter; the registration
    sets `protocol`.
    """

    protocol: str = ""
    primary_metric: str = ""

    @classmethod
    def from_config(cls, cfg, dataset, output_folder: Optional[str] = None, **options) -> "DatasetEvaluator":
        """The evaluator of `dataset` for the config `cfg`. `options` are `inference()`'s keyword arguments
        (`iou_types`, `box_only`, `expected_results`, `expected_results_sigma_tol`, `label_offset`); each
        protocol takes those that apply to it."""
        raise NotImplementedError

    def reset(self):
        """Forget everything processed so far."""
        raise NotImplementedError

    def process(self, indices: Sequence[int], targets: Sequence, outputs: Sequence):
        """One batch: dataset `indices`, the loader's `targets` (None when evaluating saved predictions) and the
        model's per-image `outputs`."""
        raise NotImplementedError

    def evaluate(self) -> Optional[EvalResult]:
        """Gather over processes, compute the metrics and write the output files; None off the main process."""
        raise NotImplementedError

    def result(self, metrics: Dict[str, float], details: Any = None) -> EvalResult:
        """`metrics` as this protocol's `EvalResult`."""
        return EvalResult(self.protocol, dict(metrics), self.primary_metric, details)


EVALUATORS: Dict[str, Type[DatasetEvaluator]] = {}


def register_evaluator(protocol: str) -> Callable[[Type[DatasetEvaluator]], Type[DatasetEvaluator]]:
    """Class decorator: `EVALUATORS[protocol] = cls` (a name can be registered once)."""

    def register(cls: Type[DatasetEvaluator]) -> Type[DatasetEvaluator]:
        if protocol in EVALUATORS:
            raise KeyError("evaluation protocol {!r} is already registered ({})".format(
                protocol, EVALUATORS[protocol].__name__))
        cls.protocol = protocol
        EVALUATORS[protocol] = cls
        return cls

    return register


def protocol_of(dataset) -> str:
    """The dataset's declared `evaluation_protocol` (wrappers such as `RepeatedDataset` forward it)."""
    protocol = getattr(dataset, "evaluation_protocol", None)
    if protocol is None:
        raise NotImplementedError("{} declares no evaluation_protocol; it cannot be evaluated".format(
            type(dataset).__name__))
    return protocol


def evaluator_class(protocol: str) -> Type[DatasetEvaluator]:
    """The class registered for `protocol`."""
    if protocol not in EVALUATORS:
        raise NotImplementedError("no evaluator is registered for protocol {!r} (known: {})".format(
            protocol, sorted(EVALUATORS)))
    return EVALUATORS[protocol]


def build_evaluator(cfg, dataset, output_folder: Optional[str] = None, **options) -> DatasetEvaluator:
    """The evaluator of the protocol `dataset` declares, built from `cfg` (see `DatasetEvaluator.from_config`)."""
    return evaluator_class(protocol_of(dataset)).from_config(cfg, dataset, output_folder, **options)


# --- helpers shared by the protocols ------------------------------------------------------------------------------

def as_int(value) -> int:
    """A python int from an int or a one-element tensor."""
    return int(value.item()) if torch.is_tensor(value) else int(value)


def target_value(target, key, default=None):
    """`key` of a target dict or BoxList field (`default` when absent or when there is no target)."""
    if target is None:
        return default
    if isinstance(target, dict):
        return target.get(key, default)
    return target.get_field(key) if target.has_field(key) else default


def original_size(target, dataset, index) -> tuple:
    """`(w, h)` of the original image: the target's `orig_size` (h, w) when it has one, else the dataset's info."""
    size = target_value(target, "orig_size")
    if size is not None:
        h, w = (int(v) for v in size)
        return w, h
    info = dataset.get_img_info(index)
    return int(info["width"]), int(info["height"])


def indexed_predictions(predictions) -> List[tuple]:
    """(dataset index, prediction) pairs of a list or of a dict keyed by dataset index (sorted)."""
    if isinstance(predictions, dict):
        return sorted(predictions.items(), key=lambda kv: kv[0])
    return list(enumerate(predictions))
