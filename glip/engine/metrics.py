"""Smoothed training metrics for the log lines: :class:`MetricLogger` of named :class:`SmoothedValue` series."""
from collections import defaultdict, deque

import torch


class SmoothedValue:
    """A series with its median over the last ``window_size`` values and its global average."""

    def __init__(self, window_size: int = 20):
        self.deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float):
        self.deque.append(value)
        self.count += 1
        self.total += value if value == value else 0.0

    @property
    def median(self) -> float:
        return torch.tensor(list(self.deque)).median().item()

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)


class MetricLogger:
    """Named :class:`SmoothedValue` meters; ``str()`` gives ``name: median (global avg)`` joined by ``delimiter``."""

    def __init__(self, delimiter: str = "  "):
        self.meters = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **kwargs):
        for name, value in kwargs.items():
            self.meters[name].update(value.item() if torch.is_tensor(value) else float(value))

    def __getattr__(self, name):
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError("'MetricLogger' object has no attribute '{}'".format(name))

    def __str__(self):
        return self.delimiter.join("{}: {:.4f} ({:.4f})".format(name, meter.median, meter.global_avg)
                                   for name, meter in self.meters.items())


__all__ = ["MetricLogger", "SmoothedValue"]
