"""tools/pseudo_label.py end to end with a small random teacher on generated captions: the output reads back
through CaptionTSV with no conversion and trains through tools/train_net.py mixed with detection (COCO json) and
grounding (MDETR json) data; (slow) a killed run resumes without duplicates and two torchrun processes label
disjoint shards."""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.stochastic import no_dropout
from helpers.teacher import write_teacher

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "pseudo_label.py"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Generated shapes at 64 px (train / test / captions-only) and a random quickstart-sized teacher."""
    from glip.data.datasets.synthetic import generate_captions_split, generate_synthetic_dataset

    root = tmp_path_factory.mktemp("shapes")
    meta = generate_synthetic_dataset(str(root / "data"), num_train=4, num_test=2, seed=1, image_size=(64, 64))
    meta["captions"] = generate_captions_split(str(root / "data"), num_images=6, seed=1, image_size=(64, 64))
    config, weight = write_teacher(root / "teacher")
    return root, meta, config, weight


def _argv(config, weight, images, out, *extra):
    return ["--config-file", str(config), "--weight", str(weight), "--input", str(images), "--output-dir", str(out),
            "--threshold", "0.0", "--batch-size", "2", "--no-progress", "--phrase-method", "rules"] + list(extra)


def _label_keys(path: Path):
    return [line.split("\t")[0] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def labelled(shapes, tmp_path_factory):
    """The tool's output on the captions-only split (threshold 0: every detection kept), 2 previews."""
    root, meta, config, weight = shapes
    out = tmp_path_factory.mktemp("pseudo")
    env_world = os.environ.pop("WORLD_SIZE", None)
    try:
        assert _load(TOOL, "pseudo_label_tool").main(
            _argv(config, weight, meta["captions"]["images"], out, "--previews", "2")) == 0
    finally:
        if env_world is not None:
            os.environ["WORLD_SIZE"] = env_world
    return out


def test_the_output_reads_back_as_a_caption_dataset(shapes, labelled, tmp_path, capsys, monkeypatch):
    from glip.data.datasets.caption import CaptionTSV
    from glip.data.positive_map import load_tokenizer

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    root, meta, config, weight = shapes
    out = labelled
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["rows_written"] == 6 and summary["skipped"] == {}
    assert summary["boxes_kept"] == 30 and summary["mean_boxes_per_image"] == 5.0  # DETECTIONS_PER_IMG 5
    assert summary["phrases"] >= 12
    assert len(list((out / "previews").glob("*.png"))) == 2

    data = CaptionTSV(str(out / "dataset.yaml"), tokenizer=load_tokenizer())
    assert [data.get_img_id(i) for i in range(len(data))] == ["{:06d}".format(i) for i in range(6)]
    _, target, _ = data[0]
    caption = (Path(meta["captions"]["images"]) / "000000.txt").read_text().strip()
    assert target.get_field("caption") == caption and len(target) >= 1
    assert all(caption[b:e].split()[-1] in ("circle", "square", "triangle", "star", "left", "right")
               for spans in target.get_field("tokens_positive") for b, e in spans)

    # Same command again: nothing left to do, nothing written twice, the same summary.
    tool = _load(TOOL, "pseudo_label_tool")
    assert tool.main(_argv(config, weight, meta["captions"]["images"], out)) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("pseudo_label:")]
    assert len(line) == 1 and "images=6 rows=6 " in line[0] and "boxes=30 " in line[0]
    assert _label_keys(out / "shards" / "part000of001.label.tsv") == [data.get_img_id(i) for i in range(6)]


def _one_error_line(code, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_inputs_fail_with_one_line_before_any_model_is_built(shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("GLIP_DEBUG", raising=False)
    root, meta, config, weight = shapes
    images = meta["captions"]["images"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.tsv").write_text("key\tonly two columns\n")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint\n" * 20)
    tool = _load(TOOL, "pseudo_label_tool")
    cases = {
        "--input not found": _argv(config, weight, tmp_path / "nowhere", tmp_path / "o"),
        "holds no image-caption pairs": _argv(config, weight, tmp_path / "empty", tmp_path / "o"),
        "want 'key<TAB>caption<TAB>base64 image'": _argv(config, weight, tmp_path / "bad.tsv", tmp_path / "o"),
        "weight file not found": _argv(config, tmp_path / "none.pth", images, tmp_path / "o"),
        "corrupt.pth": _argv(config, tmp_path / "corrupt.pth", images, tmp_path / "o"),
        "config file not found": _argv(tmp_path / "none.yaml", weight, images, tmp_path / "o"),
        "NO_SUCH_KEY": _argv(config, weight, images, tmp_path / "o", "MODEL.NO_SUCH_KEY", "1"),
        "--batch-size must be >= 1": _argv(config, weight, images, tmp_path / "o", "--batch-size", "0"),
        "--threshold must be in [0, 1)": _argv(config, weight, images, tmp_path / "o", "--threshold", "1.5"),
    }
    for expected, argv in cases.items():
        capsys.readouterr()
        code = tool.main(argv)
        assert expected in _one_error_line(code, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()  # nothing was written


def test_the_command_line_fails_with_one_line(shapes, tmp_path):
    root, meta, config, weight = shapes
    result = subprocess.run([sys.executable, str(TOOL)] + _argv(config, weight, tmp_path / "nowhere", tmp_path / "o"),
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert "--input not found" in _one_error_line(result.returncode, result.stderr)


def _mixed_config(path: Path, config: Path, meta: dict, captions_yaml: str, out: Path) -> Path:
    data = yaml.safe_load(config.read_text())
    data["DATASETS"] = {
        "REGISTER": {
            "shapes_det": {"factory": "CocoGrounding", "img_dir": meta["train"]["images"],
                           "ann_file": meta["train"]["detection"]},
            "shapes_gnd": {"factory": "FlickrDataset", "img_folder": meta["train"]["images"],
                           "ann_file": meta["train"]["grounding"], "is_train": True},
            "shapes_caps": {"factory": "CaptionTSV", "yaml_file": captions_yaml}},
        "TRAIN": ["shapes_det", "shapes_gnd", "shapes_caps"], "TEST": [], "SEPARATION_TOKENS": ". ",
        "CAPTION_CONF": 0.05, "FURTHER_SCREEN": True, "PACK_RANDOM_CAPTION_NUMBER": 2}
    data["SOLVER"].update({"MAX_ITER": 3, "IMS_PER_BATCH": 3, "WARMUP_ITERS": 1, "CHECKPOINT_PERIOD": 1000})
    data["OUTPUT_DIR"] = str(out)
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_mixture_of_detection_grounding_and_pseudo_captions_collates_and_gives_a_loss(shapes, labelled, tmp_path):
    from glip.config import cfg as default_cfg
    from glip.data.build import make_data_loader
    from glip.data.collate import BatchCollator
    from glip.engine.weights import load_weights
    from glip.modeling.detector import build_detection_model

    root, meta, config, weight = shapes
    mixed = _mixed_config(tmp_path / "mixed.yaml", config, meta, str(labelled / "dataset.yaml"), tmp_path / "train")
    cfg = default_cfg.clone()
    cfg.merge_from_file(str(mixed))
    concat = make_data_loader(cfg, is_train=True).dataset
    assert [type(d).__name__ for d in concat.datasets] == ["CocoGrounding", "FlickrDataset", "CaptionTSV"]
    # One sample of each kind in one batch: collated, a finite loss with gradients.
    batch = BatchCollator(32)([d[0] for d in concat.datasets])
    images, targets, positive_map = batch.images, batch.targets, batch.positive_map
    assert positive_map.shape == (sum(len(t) for t in targets), 256) and len(targets[2]) >= 1
    assert targets[2].get_field("caption").count(". ") >= 2  # packed with other rows' captions
    model = build_detection_model(cfg)
    load_weights(model, weight)
    model.train()
    with no_dropout(model):
        losses = model(images, targets=targets, captions=[t.get_field("caption") for t in targets],
                       positive_map=positive_map)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.slow
def test_the_mixture_trains_through_train_net(shapes, labelled, tmp_path, monkeypatch):
    from glip.utils.logger import setup_logger

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    root, meta, config, weight = shapes
    mixed = _mixed_config(tmp_path / "mixed.yaml", config, meta, str(labelled / "dataset.yaml"), tmp_path / "train")
    train_net = _load(REPO / "tools" / "train_net.py", "train_net_tool")
    try:
        assert train_net.run(["--config-file", str(mixed), "--skip-test", "MODEL.WEIGHT", str(weight)]) == 0
    finally:
        setup_logger("glip", None, 1)
    log = (tmp_path / "train" / "log.txt").read_text()
    assert "shapes_caps has 6 data points (CaptionTSV)" in log and "iter: 3" in log
    assert (tmp_path / "train" / "model_final.pth").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicates_or_losses(shapes, tmp_path):
    root, meta, config, weight = shapes
    images = meta["captions"]["images"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [sys.executable, str(TOOL)]
    subprocess.run(command + _argv(config, weight, images, clean, "--batch-size", "1"), env=_env(), check=True,
                   capture_output=True, timeout=900)
    progress = killed / "shards" / "part000of001.progress.json"
    proc = subprocess.Popen(command + _argv(config, weight, images, killed, "--batch-size", "1"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        if progress.is_file() and json.loads(progress.read_text())["counts"].get("images", 0) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["counts"]["images"]
    assert 2 <= done < 6, done  # killed in the middle
    subprocess.run(command + _argv(config, weight, images, killed, "--batch-size", "1"), env=_env(), check=True,
                   capture_output=True, timeout=900)
    for part in ("label", "img", "hw"):
        ours = (killed / "shards" / "part000of001.{}.tsv".format(part)).read_text().splitlines()
        theirs = (clean / "shards" / "part000of001.{}.tsv".format(part)).read_text().splitlines()
        assert [r.split("\t")[0] for r in ours] == [r.split("\t")[0] for r in theirs]
        if part != "label":
            assert ours == theirs
    for a, b in zip((killed / "shards/part000of001.label.tsv").read_text().splitlines(),
                    (clean / "shards/part000of001.label.tsv").read_text().splitlines()):
        a, b = json.loads(a.split("\t")[1]), json.loads(b.split("\t")[1])
        assert a["tokens_positive"] == b["tokens_positive"] and a["scores"] == pytest.approx(b["scores"], abs=2e-4)
    assert json.loads((killed / "summary.json").read_text())["images"] == 6


@pytest.mark.slow
def test_two_processes_label_disjoint_shards(shapes, tmp_path):
    from glip.data.datasets.caption import CaptionTSV
    from glip.data.positive_map import load_tokenizer

    root, meta, config, weight = shapes
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    out = tmp_path / "two"
    command = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               str(TOOL)] + _argv(config, weight, meta["captions"]["images"], out)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = _label_keys(out / "shards" / "part000of002.label.tsv")
    second = _label_keys(out / "shards" / "part001of002.label.tsv")
    assert first == ["000000", "000002", "000004"] and second == ["000001", "000003", "000005"]
    data = CaptionTSV(str(out / "dataset.yaml"), tokenizer=load_tokenizer())
    assert [data.get_img_id(i) for i in range(len(data))] == first + second
    assert len(data[5][1]) >= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["shards"] == ["part000of002", "part001of002"]
    assert result.stdout.count("pseudo_label: images=6") == 1  # rank 0 reports
