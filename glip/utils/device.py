"""Which device a run uses: decided once, at the tools' edge, from ``MODEL.DEVICE``.

The official configs say ``MODEL.DEVICE cuda``. On a machine without CUDA the tools run on the CPU instead,
after one warning; ``cpu`` is honoured on any machine. Everything below the tools receives the settled device
(the config's ``MODEL.DEVICE``, or a ``device`` argument) and never picks CUDA on its own.
"""
import logging

from glip.utils.errors import DeviceError

logger = logging.getLogger(__name__)

_warned = set()


def select_device(requested: str) -> str:
    """The device to run on for ``MODEL.DEVICE`` = ``requested``.

    ``requested`` itself when this machine has it; ``"cpu"`` (with a one-line warning, once per process) when
    it names CUDA and no CUDA device is available. Raises :class:`DeviceError` for a string that is not a
    device, or a CUDA index this machine does not have.
    """
    import torch

    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as err:
        raise DeviceError("MODEL.DEVICE {!r} is not a device ({}); use cpu, cuda or cuda:<index>".format(
            requested, str(err).split("\n")[0])) from err
    if device.type != "cuda":
        return requested
    if not torch.cuda.is_available():
        if requested not in _warned:
            _warned.add(requested)
            logger.warning("MODEL.DEVICE is %s but this machine has no CUDA device: running on the CPU "
                           "(MODEL.DEVICE cpu says so without this warning)", requested)
        return "cpu"
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError("MODEL.DEVICE {} names a GPU this machine does not have ({} CUDA device{}); use cuda, "
                          "cuda:0 .. cuda:{} or cpu".format(requested, count, "" if count == 1 else "s", count - 1))
    return requested
