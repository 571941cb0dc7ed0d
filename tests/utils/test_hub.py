"""Weights named `hf://OWNER/REPO/FILE` or by URL (glip/utils/hub.py), resolved from a pre-populated Hugging Face
cache with HF_HUB_OFFLINE=1, read safely through every loader; one-line errors when a file is not cached."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glip.utils import hub
from glip.utils.errors import UserError, WeightFileError, WeightFileNotFoundError

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
STATE = {"model": {"module.layer.weight": torch.arange(6.0).reshape(2, 3), "module.layer.bias": torch.ones(2)}}


def populate(cache: Path, repo_id: str, filename: str, payload=STATE, revision: str = "main") -> Path:
    """A hub cache as huggingface_hub lays it out: refs/<revision> names a snapshot holding the file."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(COMMIT)
    path = folder / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_parse_names():
    assert hub.parse_hub_reference("hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth") == (
        "GLIPModel/GLIP", "glip_tiny_model_o365_goldg.pth", None)
    assert hub.parse_hub_reference("hf://a/b@v1.0/sub/dir/w.pth") == ("a/b", "sub/dir/w.pth", "v1.0")
    assert hub.parse_hub_reference("https://huggingface.co/GLIPModel/GLIP/resolve/main/glip_a_tiny_o365.pth") == (
        "GLIPModel/GLIP", "glip_a_tiny_o365.pth", "main")
    assert hub.parse_hub_reference("https://example.com/w.pth") is None
    assert str(hub.HubReference("a/b", "w.pth", "dev")) == "hf://a/b@dev/w.pth"
    with pytest.raises(WeightFileError, match="not of the form hf://OWNER/REPO/PATH"):
        hub.parse_hub_reference("hf://GLIPModel/glip_tiny.pth")
    assert hub.resolve("MODEL/w.pth") == "MODEL/w.pth" and not hub.is_remote("MODEL/w.pth")


def test_hub_file_resolves_from_the_cache_offline(cache):
    expected = populate(cache, "GLIPModel/GLIP", "glip_tiny_model_o365_goldg.pth")
    name = "hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth"
    assert Path(hub.resolve(name)) == expected
    url = "https://huggingface.co/GLIPModel/GLIP/resolve/main/glip_tiny_model_o365_goldg.pth"
    assert Path(hub.resolve(url)) == expected


def test_every_loader_reads_hub_names(cache):
    from glip.config.paths_catalog import try_to_find
    from glip.engine.safe_load import load_checkpoint
    from glip.engine.weights import read_checkpoint

    expected = populate(cache, "owner/repo", "w.pth")
    name = "hf://owner/repo/w.pth"
    assert Path(try_to_find(name)) == expected
    assert torch.equal(load_checkpoint(name)["model"]["module.layer.bias"], torch.ones(2))
    state = read_checkpoint(name)
    assert sorted(state) == ["layer.bias", "layer.weight"] and torch.equal(state["layer.weight"],
                                                                           STATE["model"]["module.layer.weight"])


def test_hub_files_are_read_safely(cache):
    from glip.engine.safe_load import load_checkpoint
    from glip.utils.errors import UntrustedCheckpointError

    populate(cache, "owner/repo", "bad.pth", payload={"model": {}, "extra": Path("x")})
    with pytest.raises(UntrustedCheckpointError, match="GLIP_TRUST_CHECKPOINTS"):
        load_checkpoint("hf://owner/repo/bad.pth")


def test_not_cached_offline_is_one_line_user_error(cache):
    with pytest.raises(hub.HubFileNotCachedError) as info:
        hub.resolve("hf://GLIPModel/GLIP/glip_large_model.pth")
    err = info.value
    assert isinstance(err, WeightFileNotFoundError) and isinstance(err, UserError)
    assert "\n" not in str(err) and "HF_HUB_OFFLINE=1" in str(err) and "glip_large_model.pth" in str(err)


def test_url_is_cached_under_its_hash(cache):
    url = "https://example.com/models/glip_t.pth"
    path = hub.url_cache_path(url, cache)
    assert path.parent.parent == cache / hub.URL_CACHE_FOLDER and path.name == "glip_t.pth"
    with pytest.raises(hub.HubFileNotCachedError, match="example.com/models/glip_t.pth"):
        hub.resolve(url)
    path.parent.mkdir(parents=True)
    torch.save(STATE, path)
    assert hub.resolve(url) == str(path)
    assert hub.url_cache_path("https://example.com/other/glip_t.pth", cache) != path


def test_tool_reports_an_uncached_hub_weight_in_one_line(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "tools/export.py", "--config-file",
                           "configs/pretrain/glip_Swin_T_O365_GoldG.yaml", "--weight", "hf://GLIPModel/GLIP/nope.pth",
                           "--output", str(tmp_path / "m.onnx")], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "hf://GLIPModel/GLIP/nope.pth" in lines[-1]
    assert "Traceback" not in done.stderr
