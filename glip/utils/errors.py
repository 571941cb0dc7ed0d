"""Errors a user can fix, and the tools' edge that reports them.

A :class:`UserError` is a bad input: a config file or key, a weight file, a dataset file, an image, a caption, a
device. Its message is one line that names the culprit and says what to do. Every tool runs its entry point
through :func:`run_tool`, which prints such an error as one line on stderr (``error: <message>``) and exits with
:data:`EXIT_USER_ERROR`, without a traceback; ``--debug`` on the command line or ``GLIP_DEBUG=1`` in the
environment prints the traceback too. Any other exception is a bug and keeps its traceback.

Exit codes of the tools:

* 0 (:data:`EXIT_OK`): done;
* 1 (:data:`EXIT_FAILURE`): an internal error (with its traceback), or a run that finished but skipped some
  inputs (``demo.py``: unreadable images) or found problems it was asked to look for (``check_dataset.py``);
* 2 (:data:`EXIT_USER_ERROR`): a bad input or command line (argparse uses 2 as well); nothing was run;
* 130 (:data:`EXIT_INTERRUPTED`): stopped by Ctrl-C.

A new tool adopts all of this in one line: ``sys.exit(run_tool(main))``, where ``main(argv)`` parses ``argv``.
The errors keep a builtin base where callers used to catch one (a missing file is also a ``FileNotFoundError``,
an unknown config key also a ``KeyError``), so code that caught those still does.
"""
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GLIP_DEBUG"


class UserError(Exception):
    """A bad input the user can fix. ``str()`` is one line: what is wrong, with which culprit, and what to do."""

    def __str__(self):
        return " ".join(str(self.args[0]).split()) if self.args else ""


class ConfigError(UserError):
    """A config file, key or value that cannot be used."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist."""


class WeightFileError(UserError):
    """A weight file that is missing, unreadable, unsafe to read, or does not fit the model."""


class WeightFileNotFoundError(WeightFileError, FileNotFoundError):
    """The weight file does not exist."""


class UntrustedCheckpointError(WeightFileError):
    """A checkpoint holding pickled objects that could run code; loaded only with ``GLIP_TRUST_CHECKPOINTS=1``."""


class DataError(UserError):
    """A dataset file, image folder, image, caption or category that cannot be used."""


class DeviceError(UserError):
    """A ``MODEL.DEVICE`` this machine does not have."""


def debug_requested(argv: Sequence[str] = ()) -> bool:
    """True when ``--debug`` is among ``argv`` or ``GLIP_DEBUG`` is set to something other than "" / "0"."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def format_error(err: BaseException) -> str:
    """The one line :func:`run_tool` prints for ``err``."""
    return "error: {}".format(err)


def run_tool(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)`` (``argv`` default ``sys.argv[1:]``, without ``--debug``) and return its exit code.

    A :class:`UserError` becomes one line on stderr and :data:`EXIT_USER_ERROR`; Ctrl-C becomes "interrupted" and
    :data:`EXIT_INTERRUPTED`. With ``--debug`` / ``GLIP_DEBUG=1`` their traceback is printed first. Other
    exceptions propagate with their traceback. ``main`` returning None counts as :data:`EXIT_OK`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        code = main(argv)
    except UserError as err:
        _report(err, format_error(err), debug)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        _report(err, "interrupted", debug)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else int(code)


def _report(err: BaseException, line: str, debug: bool):
    sys.stdout.flush()
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(line, file=sys.stderr, flush=True)
