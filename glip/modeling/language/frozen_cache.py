"""`FrozenTextCache`: a frozen language backbone's outputs kept row by row, so each caption is encoded once.

A frozen backbone (eval mode, no gradients) maps a caption's token ids and attention mask to the same features
every time, and training sees the same captions every epoch (and, with DATASETS.DISABLE_SHUFFLE, the same
detection prompt in every batch). The cache keys each row by its ids and mask (padding included, so the key is
exactly what the backbone sees) and runs the backbone only on the rows it does not hold, as one smaller batch.
A smaller batch may round differently in the last bits than the full one, so the option is off by default
(MODEL.LANGUAGE_BACKBONE.CACHE_FROZEN 0) and refused unless FREEZE is on. When the encoder is a module, the cache
empties itself whenever one of its parameters or buffers changed since the last call (loaded weights, an in-place
update: each tensor's version counter, or a replaced tensor), so stale features are never served.
"""
import itertools
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

import torch


class FrozenTextCache:
    """Least-recently-used memo of per-row language outputs (`aggregate` (D,), `embedded` / `hidden` (T, D),
    `masks` (T,)), at most `capacity` rows; `misses` counts the rows encoded, `hits` the rows served without."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("FrozenTextCache capacity must be positive, got {}".format(capacity))
        self.capacity = int(capacity)
        self._rows: "OrderedDict[bytes, Dict[str, torch.Tensor]]" = OrderedDict()
        self._weights: Optional[Tuple] = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def _keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
        """One key per row: its ids and mask bytes (one copy of the batch to the CPU, not one per row)."""
        ids = input_ids.detach().to("cpu", torch.int64).contiguous().numpy()
        mask = attention_mask.detach().to("cpu", torch.int64).contiguous().numpy()
        return [i.tobytes() + b"|" + m.tobytes() for i, m in zip(ids, mask)]

    @staticmethod
    def _weights_state(encode) -> Optional[Tuple]:
        """(identity, version) of every parameter and buffer of a module encoder; None for a plain callable."""
        if not isinstance(encode, torch.nn.Module):
            return None
        return tuple((id(t), t._version) for t in itertools.chain(encode.parameters(), encode.buffers()))

    def clear(self) -> None:
        self._rows.clear()

    def __call__(self, encode: Callable[[torch.Tensor, torch.Tensor], dict], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> dict:
        """The language dict of `encode(input_ids, attention_mask)` ((B, T) each), rows not held encoded now."""
        weights = self._weights_state(encode)
        if weights != self._weights:
            self.clear()
            self._weights = weights
        keys = self._keys(input_ids, attention_mask)
        todo: Dict[bytes, int] = {}  # key -> first row holding it, for the rows not held
        for b, key in enumerate(keys):
            if key not in self._rows and key not in todo:
                todo[key] = b
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        fresh = {}
        if todo:
            index = torch.tensor(list(todo.values()), device=input_ids.device)
            out = encode(input_ids[index], attention_mask[index])
            for j, key in enumerate(todo):
                fresh[key] = {name: value[j].detach().clone() for name, value in out.items()}
        rows = [fresh[key] if key in fresh else self._rows[key] for key in keys]
        for key, row in zip(keys, rows):
            self._remember(key, row)
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}

    def _remember(self, key: bytes, row: Dict[str, torch.Tensor]) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
