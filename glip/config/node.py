"""yacs ``CfgNode`` whose merge errors say which key and which file or option list caused them.

Semantics are exactly yacs': yaml values that are strings are ``literal_eval``-ed
(``"(1, 2)"`` -> tuple, ``'[{"id": 1}]'`` -> list of dicts), list/tuple are coerced to
the default's type, ``None`` defaults accept any valid type, and unknown keys are
refused unless the parent node was created with ``new_allowed=True``. The only
addition is that a failing ``merge_from_file`` / ``merge_from_list`` re-raises the same
exception type with the offending file (or the option list) appended to the message.
"""
from yacs.config import CfgNode as _YacsCfgNode


class ConfigMergeError(KeyError):
    """Unknown key while merging; ``str()`` names the key and the source (not repr-quoted)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _reraise_with_source(err: Exception, source: str):
    """Re-raise ``err`` with ``source`` appended, keeping a catchable type (KeyError/ValueError/...)."""
    message = err.args[0] if (isinstance(err, KeyError) and err.args) else str(err)
    message = "{} (while merging {})".format(message, source)
    if isinstance(err, KeyError):
        raise ConfigMergeError(message) from err
    if isinstance(err, (ValueError, AssertionError, TypeError)):
        raise type(err)(message) from err
    raise err


class CfgNode(_YacsCfgNode):
    """Drop-in yacs ``CfgNode``; merge failures name the key and the yaml file / option list."""

    def merge_from_file(self, cfg_filename):
        """Merge the yaml file ``cfg_filename`` into this node (yacs rules)."""
        with open(cfg_filename, "r") as f:
            loaded = self.load_cfg(f)
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            _reraise_with_source(err, "config file {}".format(cfg_filename))

    def merge_from_list(self, cfg_list):
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (e.g. trailing command-line options)."""
        try:
            super().merge_from_list(list(cfg_list))
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            _reraise_with_source(err, "command-line options {}".format(list(cfg_list)))
