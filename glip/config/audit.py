"""The option audit: a config is checked against the table of `glip.config.option_table` before any work.

`check_config(cfg, training=False)` raises `RefusedOptionError` (a ValueError) naming every key whose value is
not implemented: a REFUSED key at a non-default value, an IMPLEMENTED key at a value outside its `supported`
values, and, for the training tools, a `training_refused` key at a non-default value. It logs a warning for the
values an entry flags (`warn`). The tools call it when their config is loaded (`glip.utils.cli`), the predictor
when it is built.
"""
import logging
from typing import Any, Iterator, List, Optional, Tuple

from glip.config.option_table import IMPLEMENTED, NO_EFFECT, OPTIONS, REFUSED, Option
from glip.utils.errors import ConfigError

logger = logging.getLogger(__name__)

_BY_KEY = {option.key: option for option in OPTIONS}


class RefusedOptionError(ConfigError, ValueError):
    """A config sets options that are not implemented; `refusals` lists `(key, value, reason)`."""

    def __init__(self, refusals: List[Tuple[str, Any, str]]):
        self.refusals = list(refusals)
        lines = ["{} = {!r}: {}".format(key, value, reason) for key, value, reason in self.refusals]
        super().__init__("refused config option(s), nothing was run:\n  " + "\n  ".join(lines))


def option_for(key: str) -> Optional[Option]:
    """The entry of `key`: its own, else that of its nearest enclosing node ("A.B." for "A.B.C"), else None."""
    if key in _BY_KEY:
        return _BY_KEY[key]
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end]) + "."
        if prefix in _BY_KEY:
            return _BY_KEY[prefix]
    return None


def leaf_keys(node, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """`(dotted key, value)` of every leaf; nodes that accept new keys (e.g. DATASETS.REGISTER) are leaves."""
    for key, value in node.items():
        if isinstance(value, dict) and value and not getattr(value, "__dict__", {}).get("__new_allowed__", False):
            yield from leaf_keys(value, prefix + key + ".")
        else:
            yield prefix + key, value


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def refusals(cfg, training: bool = False, defaults=None) -> List[Tuple[str, Any, str]]:
    """`(key, value, reason)` for every refused setting of `cfg` (module docstring); `defaults` default to the
    package defaults."""
    if defaults is None:
        from glip.config import cfg as defaults
    out = []
    for key, default in leaf_keys(defaults):
        value = _value(cfg, key)
        option = option_for(key)
        if option is None:
            if _plain(value) != _plain(default):
                out.append((key, value, "not in the option table (glip.config.option_table)"))
            continue
        reason = _refusal(option, value, _plain(value) != _plain(default), cfg, training)
        if reason:
            out.append((key, value, reason))
        elif option.warn is not None and option.warn(value, cfg):
            logger.warning("%s = %r: %s", key, value, option.note)
    return out


def _refusal(option: Option, value, changed: bool, cfg, training: bool) -> Optional[str]:
    if option.status == REFUSED and changed:
        return "{} (only the default is accepted)".format(option.note)
    if option.status == IMPLEMENTED and option.supported is not None and not option.supported(value, cfg):
        return "not implemented; supported: {}".format(option.supported_text)
    if option.training_refused and training and changed:
        return "not implemented for training ({})".format(option.note)
    return None


def check_config(cfg, training: bool = False, defaults=None) -> None:
    """Raise `RefusedOptionError` when `cfg` sets options that are not implemented (see `refusals`)."""
    found = refusals(cfg, training, defaults)
    if found:
        raise RefusedOptionError(found)


def counts(defaults=None) -> dict:
    """Number of keys of the default config per status."""
    if defaults is None:
        from glip.config import cfg as defaults
    statuses = [option_for(key).status for key, _ in leaf_keys(defaults)]
    return {status: statuses.count(status) for status in (IMPLEMENTED, NO_EFFECT, REFUSED)}
