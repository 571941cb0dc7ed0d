"""Bad inputs given to the tools' command lines: exit code 2, one line naming the culprit, no traceback (issue 18).

Config errors stop before torch is imported, so each runs as its own ``python tools/X.py ...``. The cases that need
the package (weights, datasets, images, captions, devices) run the same command lines in one child process, one
after another (``LAUNCHER``: each tool script run as ``__main__`` with its ``sys.argv``), so the imports are paid
once. The expected counts of the GLIP-L / GLIP-T case come from the reference's state-dict manifests.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REFERENCE
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
GLIP_T = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")

LAUNCHER = """
import contextlib, io, json, os, runpy, sys, traceback
cases_file, results_file = sys.argv[1:3]
cases = json.load(open(cases_file))
results = {}
for name, case in cases.items():
    sys.argv = [case["tool"]] + case["argv"]
    saved = dict(os.environ)
    os.environ.update(case.get("env", {}))
    err, code = io.StringIO(), None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(case["tool"], run_name="__main__")
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            traceback.print_exc()
            code = "uncaught"
    os.environ.clear()
    os.environ.update(saved)
    results[name] = {"code": code, "stderr": err.getvalue()}
json.dump(results, open(results_file, "w"))
"""


def _env(root: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DATASET=str(root / "data"), PYTHONPATH=str(REPO))
    for key in ("LOCAL_RANK", "WORLD_SIZE", "GLIP_DEBUG", "GLIP_TRUST_CHECKPOINTS"):
        env.pop(key, None)
    return env


def tool(name: str) -> str:
    return str(REPO / "tools" / (name + ".py"))


def error_line(code, stderr: str) -> str:
    """The one "error: ..." line of a run that stopped on a bad input (exit code 2, no traceback)."""
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr[-3000:]
    return lines[0]


def _write_task(root: Path, name: str, ann_file: str):
    (root / name).write_text("DATASETS:\n  REGISTER:\n    test:\n      ann_file: {}\n      img_dir: task\n"
                             "  TEST: (\"test\",)\n  TRAIN: (\"test\",)\n".format(ann_file))


def _coco(file_name: str, category_id: int) -> str:
    return json.dumps({"images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
                       "annotations": [{"id": 1, "image_id": 1, "category_id": category_id, "bbox": [2, 2, 20, 20],
                                        "area": 400, "iscrowd": 0}],
                       "categories": [{"id": 1, "name": "tree"}]})


class RunsCode:
    """Unpickling this writes the file ``path``: a checkpoint that would run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, ("open({!r}, 'w').write('code ran')".format(self.path),))


def glip_l_shaped_state() -> dict:
    """A state dict with the shapes of the official GLIP-L checkpoint (expanded views: a tiny file)."""
    keys = json.loads((REFERENCE / "state_dict_glip_large.json").read_text())["keys"]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {k: torch.zeros((), dtype=dtypes[v["dtype"]]).expand(v["shape"]) for k, v in keys.items()}


def glip_l_on_glip_t_counts():
    """(tensors of GLIP-T, of them differing in shape from GLIP-L, GLIP-L tensors GLIP-T lacks) from the manifests."""
    tiny = json.loads((REFERENCE / "state_dict_glip_tiny.json").read_text())["keys"]
    large = json.loads((REFERENCE / "state_dict_glip_large.json").read_text())["keys"]
    differ = [k for k in tiny if k in large and tiny[k]["shape"] != large[k]["shape"]
              and "relative_position_bias_table" not in k and "cls_logits" not in k]
    return len(tiny), len(differ), len([k for k in large if k not in tiny])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Bad (and good) inputs under one folder: weights, images, a task dataset and task configs."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "corrupt.pth").write_bytes(b"not a checkpoint\n" * 20)
    torch.save({"model": {"a": torch.zeros(1000)}}, root / "whole.pth")
    (root / "truncated.pth").write_bytes((root / "whole.pth").read_bytes()[:2000])  # an interrupted download
    torch.save({"model": {"a": torch.zeros(2)}, "extra": RunsCode(root / "CODE_RAN")}, root / "runs_code.pth")
    torch.save({"model": glip_l_shaped_state(), "iteration": 0}, root / "glip_l.pth")
    (root / "notimage.jpg").write_text("I am text\n")
    Image.new("RGB", (64, 48), (120, 30, 30)).save(root / "photo.jpg")
    (root / "badkey.yaml").write_text("MODEL:\n  DYHEAD:\n    NUM_CONVZ: 3\n")
    task = root / "data/task"
    task.mkdir(parents=True)
    Image.new("RGB", (64, 48), (0, 128, 0)).save(task / "0.jpg")
    (task / "notimage.jpg").write_text("not an image")
    (task / "badcat.json").write_text(_coco("0.jpg", 7))
    (task / "badimg.json").write_text(_coco("notimage.jpg", 1))
    (task / "ok.json").write_text(_coco("0.jpg", 1))
    config = yaml.safe_load(Path(GLIP_T).read_text())
    config["DATASETS"].update(REGISTER={"test": {"ann_file": "task/ok.json", "img_dir": "task"}}, TRAIN=["test"],
                              TEST=["test"])
    (root / "glip_t_on_task.yaml").write_text(yaml.safe_dump(config))
    _write_task(root, "missing_ann.yaml", "task/no_such.json")
    _write_task(root, "badcat.yaml", "task/badcat.json")
    _write_task(root, "badimg.yaml", "task/badimg.json")
    resume = root / "resume"
    resume.mkdir()
    torch.save({"model": {"a": torch.zeros(2)}, "rng": RunsCode(root / "CODE_RAN")}, resume / "model_0000010.pth")
    (resume / "last_checkpoint").write_text("model_0000010.pth")
    return root


# --- config errors: one process per command line ----------------------------------------------------------------

FAST_CASES = {
    "unknown key in a yaml": ("test_grounding_net", ["--config-file", "{root}/badkey.yaml"],
                              ["MODEL.DYHEAD.NUM_CONVZ", "badkey.yaml", "did you mean MODEL.DYHEAD.NUM_CONVS?"]),
    "unknown key in the options": ("train_net", ["--config-file", GLIP_T, "MODEL.DYHEAD.NUM_CONVZ", "3"],
                                   ["MODEL.DYHEAD.NUM_CONVZ", "command-line options"]),
    "value of the wrong type": ("train_net", ["--config-file", GLIP_T, "SOLVER.MAX_EPOCH", "twelve"],
                                ["SOLVER.MAX_EPOCH", "twelve"]),
    "config file missing": ("finetune", ["--config-file", "{root}/no_such.yaml"],
                            ["config file not found: {root}/no_such.yaml"]),
    "config that is not yaml": ("test_grounding_net", ["--config-file", "{root}/corrupt.pth"],
                                ["config file {root}/corrupt.pth is not a readable yaml config"]),
    "--ft-tasks matching nothing": ("finetune", ["--config-file", GLIP_T, "--ft-tasks", "{root}/nothing*.yaml"],
                                    ["--ft-tasks", "nothing*.yaml", "matches no file"]),
    "check_dataset config missing": ("check_dataset", ["--config-file", "{root}/no_such.yaml"],
                                     ["config file not found: {root}/no_such.yaml"]),
    "quickstart unknown key": ("quickstart", ["--output-dir", "{root}/qs", "MODEL.NOPE", "1"], ["MODEL.NOPE"]),
}


@pytest.mark.parametrize("case", sorted(FAST_CASES))
def test_config_errors_end_in_one_line(case, inputs):
    name, argv, expected = FAST_CASES[case]
    argv = [a.format(root=inputs) for a in argv]
    result = subprocess.run([sys.executable, tool(name)] + argv, cwd=inputs, env=_env(inputs), capture_output=True,
                            text=True, timeout=300)
    line = error_line(result.returncode, result.stderr)
    for text in expected:
        assert text.format(root=inputs) in line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(how, inputs):
    env = _env(inputs)
    argv = ["--config-file", GLIP_T, "MODEL.DYHEAD.NUM_CONVZ", "3"]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        env["GLIP_DEBUG"] = "1"
    result = subprocess.run([sys.executable, tool("train_net"), *argv], cwd=inputs, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "ConfigAssertionError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: Non-existent key: MODEL.DYHEAD.NUM_CONVZ")


# --- inputs checked before the model is built: one process for all ----------------------------------------------

def _slow_input_cases(root: Path) -> dict:
    t, r = GLIP_T, str(root)
    tgn, demo = tool("test_grounding_net"), tool("demo")
    n_tiny, n_differ, n_extra = glip_l_on_glip_t_counts()
    return {
        "weight file missing": (tgn, ["--config-file", t, "--weight", r + "/nowhere.pth"],
                                ["weight file not found: " + r + "/nowhere.pth", "--weight or MODEL.WEIGHT"]),
        "weight file truncated": (tgn, ["--config-file", t, "--weight", r + "/truncated.pth"],
                                  ["weight file " + r + "/truncated.pth is not a readable PyTorch checkpoint"]),
        "GLIP-L weight for a GLIP-T config": (tgn, ["--config-file", t, "--weight", r + "/glip_l.pth"], [
            "weight file {}/glip_l.pth does not fit the model of {}".format(r, t),
            "{} of {} tensors differ in shape (first: backbone.body.patch_embed.proj.weight (file (192, 3, 4, 4), "
            "model (96, 3, 4, 4)))".format(n_differ, n_tiny),
            "{} tensors are in the file but not in the model".format(n_extra),
            "it looks like a GLIP checkpoint with a Swin-L backbone"]),
        "checkpoint that would run code": (tgn, ["--config-file", t, "--weight", r + "/runs_code.pth"], [
            "refused to load " + r + "/runs_code.pth", "GLIP_TRUST_CHECKPOINTS=1"]),
        "resume checkpoint that would run code": (tool("train_net"), [
            "--config-file", r + "/glip_t_on_task.yaml", "--skip-test", "OUTPUT_DIR", r + "/resume"],
            ["refused to load " + r + "/resume/model_0000010.pth", "GLIP_TRUST_CHECKPOINTS=1"]),
        "annotation file missing": (tgn, ["--config-file", t, "--task_config", r + "/missing_ann.yaml"],
                                    ["dataset 'test' (DATASETS.TEST)", "task/no_such.json"]),
        "category id outside the categories": (tgn, ["--config-file", t, "--task_config", r + "/badcat.yaml"],
                                               ["dataset 'test'", "category_id 7", "'categories' lists [1]"]),
        "dataset image that does not decode": (tgn, ["--config-file", t, "--task_config", r + "/badimg.yaml"],
                                               ["dataset 'test'", "task/notimage.jpg", "do not decode"]),
        "task config missing": (tgn, ["--config-file", t, "--task_config", r + "/no_task.yaml"],
                                ["config file not found: " + r + "/no_task.yaml"]),
        "not a device": (tgn, ["--config-file", t, "MODEL.DEVICE", "gpu"], ["MODEL.DEVICE 'gpu' is not a device"]),
        "finetune category id": (tool("finetune"), ["--config-file", t, "--ft-tasks", r + "/badcat.yaml",
                                                    "--skip-test", "OUTPUT_DIR", r + "/ft"],
                                 ["dataset 'test' (DATASETS.TRAIN)", "category_id 7"]),
        "train_net weight missing": (tool("train_net"), ["--config-file", t, "MODEL.WEIGHT", r + "/nowhere.pth",
                                                         "OUTPUT_DIR", r + "/train"], [r + "/nowhere.pth"]),
        "demo on a file that is not an image": (demo, ["--config-file", t, "--image", r + "/notimage.jpg",
                                                       "--caption", "a tree", "--output", r + "/demo"],
                                                [r + "/notimage.jpg is not an image file"]),
        "demo caption empty": (demo, ["--config-file", t, "--image", r + "/photo.jpg", "--caption", "  "],
                               ["--caption is empty"]),
        "demo caption too long": (demo, ["--config-file", t, "--image", r + "/photo.jpg", "--caption",
                                         " ".join(["a red car next to a tall green tree"] * 40)],
                                  ["has 362 tokens, more than MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN = 256"]),
        "demo config missing": (demo, ["--config-file", r + "/no_such.yaml", "--image", r + "/photo.jpg",
                                       "--caption", "a tree"], ["config file not found: " + r + "/no_such.yaml"]),
        "benchmark weight missing": (tool("benchmark"), ["--config-file", t, "--weight", r + "/nowhere.pth",
                                                         "--size", "64x64"], [r + "/nowhere.pth"]),
        "benchmark size": (tool("benchmark"), ["--config-file", t, "--size", "big"], ["--size", "'big'"]),
    }


@pytest.fixture(scope="module")
def launched(inputs):
    """{case: {"code", "stderr"}} of every case of :func:`_slow_input_cases`, run in one child process."""
    cases = {name: {"tool": t, "argv": argv} for name, (t, argv, _) in _slow_input_cases(inputs).items()}
    (inputs / "cases.json").write_text(json.dumps(cases))
    (inputs / "launch.py").write_text(LAUNCHER)
    result = subprocess.run([sys.executable, str(inputs / "launch.py"), str(inputs / "cases.json"),
                             str(inputs / "results.json")], cwd=inputs, env=_env(inputs), capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((inputs / "results.json").read_text())


@pytest.mark.parametrize("case", sorted(_slow_input_cases(Path("/x"))))
def test_bad_inputs_end_in_one_line_before_the_model_is_built(case, inputs, launched):
    _, _, expected = _slow_input_cases(inputs)[case]
    line = error_line(launched[case]["code"], launched[case]["stderr"])
    for text in expected:
        assert text in line


def test_no_checkpoint_code_ran(inputs, launched):
    assert launched["checkpoint that would run code"]["code"] == 2
    assert not (inputs / "CODE_RAN").exists()


def test_cuda_config_warns_once_without_cuda(inputs, launched):
    """The official configs say MODEL.DEVICE cuda; without CUDA the first run of the process warns in one line."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    warnings = [line for result in launched.values() for line in result["stderr"].splitlines()
                if "no CUDA device: running on the CPU" in line]
    assert len(warnings) == 1 and warnings[0].startswith("MODEL.DEVICE is cuda but")


@pytest.mark.slow
def test_official_config_runs_on_the_cpu_without_model_device(tmp_path, monkeypatch):
    """test_grounding_net end to end through its command line with the official GLIP-T config (MODEL.DEVICE cuda)
    and no MODEL.DEVICE option: on a machine without CUDA it warns once and evaluates on the CPU."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tgn_tests", Path(__file__).with_name("test_test_grounding_net.py"))
    tgn_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tgn_tests)
    argv, _ = tgn_tests.prepare_tiny_run(tmp_path, monkeypatch)
    at = argv.index("MODEL.DEVICE")
    del argv[at:at + 2]
    env = dict(_env(tmp_path), DATASET=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, tool("test_grounding_net"), *argv, "OUTPUT_DIR", str(tmp_path / "out")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out/eval/tiny_glip/inference/test/bbox.json").is_file()
    warned = "MODEL.DEVICE is cuda but this machine has no CUDA device: running on the CPU" in result.stderr
    assert warned != torch.cuda.is_available()
