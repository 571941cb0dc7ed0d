"""glip.utils.device: MODEL.DEVICE settled once at the tools' edge (cuda without CUDA -> cpu, one warning)."""
import logging

import pytest
import torch

from glip.utils import cli, device
from glip.utils.errors import DeviceError


def test_cpu_is_kept():
    assert device.select_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_runs_on_the_cpu_after_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="glip.utils.device"):  # (indices nothing else asks for)
        assert device.select_device("cuda:6") == "cpu"
        assert device.select_device("cuda:6") == "cpu"
        assert device.select_device("cuda:7") == "cpu"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("no CUDA device: running on the CPU" in m for m in messages)
    assert messages[0].startswith("MODEL.DEVICE is cuda:6 but")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_kept_and_a_missing_index_is_named():
    assert device.select_device("cuda") == "cuda"
    count = torch.cuda.device_count()
    with pytest.raises(DeviceError, match="cuda:{}".format(count)):
        device.select_device("cuda:{}".format(count))


def test_a_string_that_is_no_device_is_named():
    with pytest.raises(DeviceError, match="MODEL.DEVICE 'gpu' is not a device"):
        device.select_device("gpu")


def test_the_tools_config_merge_settles_the_device():
    """The default config (and every official config) says cuda; merged at the tools' edge it is runnable here."""
    cfg = cli.merge_config(cli.base_config(), None, [])
    assert cli.base_config().MODEL.DEVICE == "cuda"
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")
    assert cli.merge_config(cli.base_config(), None, ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"
