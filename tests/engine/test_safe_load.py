"""glip.engine.safe_load: checkpoints load as tensors and plain data only; anything else is refused by name."""
import fractions
from collections import OrderedDict

import numpy as np
import pytest
import torch

from glip.engine.checkpointer import load_checkpoint_file
from glip.engine.safe_load import TRUST_ENV, load_checkpoint
from glip.engine.weights import read_checkpoint
from glip.utils.errors import UntrustedCheckpointError, WeightFileError, WeightFileNotFoundError


class WritesAFile:
    """Unpickling this calls exec, which writes ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, ("open({!r}, 'w').write('code ran')".format(self.path),))


@pytest.fixture
def trust_unset(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("reader", [load_checkpoint, read_checkpoint, load_checkpoint_file])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, trust_unset, reader, legacy):
    marker = tmp_path / "code_ran.txt"
    path = tmp_path / "crafted.pth"
    torch.save({"model": {"w": torch.ones(2)}, "extra": WritesAFile(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UntrustedCheckpointError) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "exec" in message
    assert "GLIP_TRUST_CHECKPOINTS=1" in message
    assert not marker.exists()


def test_objects_beyond_plain_data_load_only_with_the_opt_in(tmp_path, monkeypatch):
    path = tmp_path / "fraction.pth"
    torch.save({"model": {"w": torch.ones(2)}, "ratio": fractions.Fraction(1, 3)}, path)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UntrustedCheckpointError, match="fractions.Fraction"):
        load_checkpoint(path)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_checkpoint(path)["ratio"] == fractions.Fraction(1, 3)
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(path, trust=False)
    monkeypatch.setenv(TRUST_ENV, "0")
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(path)


def test_official_layout_and_numpy_values_load(tmp_path, trust_unset):
    """What official GLIP files and other tools' checkpoints hold: model, optimizer, scheduler, iteration, numpy
    numbers and arrays."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    data = {"model": OrderedDict(("module." + k, v) for k, v in model.state_dict().items()),
            "optimizer": optimizer.state_dict(), "scheduler": {"milestones": [2, 4], "last_epoch": 3,
                                                               "base_lrs": [0.1]},
            "iteration": 5, "best": np.float64(0.25), "step": np.int64(7), "table": np.arange(4, dtype=np.int32)}
    path = tmp_path / "official.pth"
    torch.save(data, path)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 5 and loaded["best"] == 0.25 and loaded["step"] == 7
    np.testing.assert_array_equal(loaded["table"], np.arange(4))
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert set(read_checkpoint(path)) == {"weight", "bias"}


def test_missing_folder_and_broken_files_are_named(tmp_path, trust_unset):
    with pytest.raises(WeightFileNotFoundError, match="weight file not found: .*nowhere.pth"):
        load_checkpoint(tmp_path / "nowhere.pth")
    with pytest.raises(WeightFileError, match="is not a file"):
        load_checkpoint(tmp_path)
    whole = tmp_path / "whole.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[:1500])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint\n" * 20)
    for path in (truncated, garbage):
        with pytest.raises(WeightFileError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert not isinstance(info.value, UntrustedCheckpointError)


def test_mmap_reads_shapes_without_the_data(tmp_path, trust_unset):
    path = tmp_path / "big.pth"
    torch.save({"model": {"w": torch.arange(6.0).reshape(2, 3)}}, path)
    state = read_checkpoint(path, mmap=True)
    assert tuple(state["w"].shape) == (2, 3) and float(state["w"][1, 2]) == 5.0
