"""yacs ``CfgNode`` whose merge errors say which key and which file or option list caused them.

Semantics are exactly yacs': yaml values that are strings are ``literal_eval``-ed
(``"(1, 2)"`` -> tuple, ``'[{"id": 1}]'`` -> list of dicts), list/tuple are coerced to
the default's type, ``None`` defaults accept any valid type, and unknown keys are
refused unless the parent node was created with ``new_allowed=True``. The only
addition is the errors: a failing ``merge_from_file`` / ``merge_from_list`` raises a
``glip.utils.errors.ConfigError`` (one line: the key, the offending file or option list, and
for an unknown key the closest known one) that is also of yacs' exception type
(KeyError / ValueError / AssertionError / TypeError); a missing or unreadable yaml file is
a ``ConfigError`` naming it.
"""
import difflib
import re

from yacs.config import CfgNode as _YacsCfgNode

from glip.utils.errors import ConfigError, ConfigFileNotFoundError


class ConfigMergeError(ConfigError, KeyError):
    """Unknown key while merging; ``str()`` names the key and the source (not repr-quoted)."""


class ConfigValueError(ConfigError, ValueError):
    """A value of the wrong type while merging."""


class ConfigAssertionError(ConfigError, AssertionError):
    """yacs' assertion (unknown key or odd-length list in ``merge_from_list``)."""


class ConfigTypeError(ConfigError, TypeError):
    """yacs' type error while merging."""


_ERROR_TYPES = ((KeyError, ConfigMergeError), (ValueError, ConfigValueError), (AssertionError, ConfigAssertionError),
                (TypeError, ConfigTypeError))


def _full_keys(node, prefix=""):
    for key, value in node.items():
        name = prefix + key
        if isinstance(value, dict):
            yield from _full_keys(value, name + ".")
        else:
            yield name


def _suggestion(message: str, root) -> str:
    """"; did you mean X?" for an unknown key in ``message`` close to a key of ``root``."""
    match = re.search(r"Non-existent (?:config )?key: (\S+)", message)
    if match is None:
        return ""
    close = difflib.get_close_matches(match.group(1), list(_full_keys(root)), n=1, cutoff=0.8)
    return "; did you mean {}?".format(close[0]) if close else "; the known keys are in glip/config/defaults.py"


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(err).__name__


def _reraise_with_source(err: Exception, source: str, root=None):
    """Re-raise ``err`` with ``source`` appended, as a ConfigError that keeps yacs' type (KeyError/ValueError/...)."""
    message = err.args[0] if (isinstance(err, KeyError) and err.args) else str(err)
    message = "{} (while merging {}){}".format(message, source, _suggestion(message, root) if root else "")
    for base, error_type in _ERROR_TYPES:
        if isinstance(err, base):
            raise error_type(message) from err
    raise err


class CfgNode(_YacsCfgNode):
    """Drop-in yacs ``CfgNode``; merge failures name the key and the yaml file / option list."""

    def merge_from_file(self, cfg_filename):
        """Merge the yaml file ``cfg_filename`` into this node (yacs rules)."""
        try:
            with open(cfg_filename, "r") as f:
                loaded = self.load_cfg(f)
        except FileNotFoundError as err:
            raise ConfigFileNotFoundError("config file not found: {}; check the path".format(cfg_filename)) from err
        except Exception as err:  # yaml syntax, binary content, a folder, a yaml that is not a mapping, ...
            raise ConfigError("config file {} is not a readable yaml config ({}); check the file".format(
                cfg_filename, _first_line(err))) from err
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            _reraise_with_source(err, "config file {}".format(cfg_filename), self)

    def merge_from_list(self, cfg_list):
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (e.g. trailing command-line options)."""
        try:
            super().merge_from_list(list(cfg_list))
        except (KeyError, ValueError, AssertionError, TypeError) as err:
            _reraise_with_source(err, "command-line options {}".format(list(cfg_list)), self)
