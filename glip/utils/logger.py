"""Run logging: console + ``log.txt`` on the main process, silence on the others."""
import logging
import os
import sys

_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_MARK = "_glip_run_handler"


def setup_logger(name, save_dir, distributed_rank, filename="log.txt"):
    """Configure the logger ``name`` for a run and return it.

    Rank 0 logs DEBUG and above to stdout and, when ``save_dir`` is given, to
    ``save_dir/filename``. Other ranks get no handlers (their records are dropped unless
    an ancestor logger handles them). Calling it again replaces the handlers it added
    before, so repeated runs in one process do not duplicate lines.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
            handler.close()
    if distributed_rank > 0:
        return logger
    formatter = logging.Formatter(_FORMAT)
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(logging.DEBUG)
    console.setFormatter(formatter)
    setattr(console, _MARK, True)
    logger.addHandler(console)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(save_dir, filename))
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        setattr(file_handler, _MARK, True)
        logger.addHandler(file_handler)
    return logger
