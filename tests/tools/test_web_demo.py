"""tools/web_demo.py: the page and its routes on a live server (a tiny golden-filled GLIP), the form parsing and
input errors, the quickstart default; and, marked `browser` (run by .ci/run), the whole demo driven in headless
Chromium: upload the photo, type class names, submit, read the rendered image and the detections table."""
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_golden
from helpers.glip_model import fill_model_
from helpers.tiny import TINY_BERT_OPTS
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import web_demo  # noqa: E402

CONFIG = str(REPO / "configs/pretrain/glip_Swin_T_O365_GoldG.yaml")
TINY_OPTS = ["MODEL.SWINT.EMBED_DIM", "24", "MODEL.SWINT.DEPTHS", "(1, 1, 1, 1)", "MODEL.SWINT.NUM_HEADS",
             "(1, 1, 1, 1)", "MODEL.SWINT.OUT_CHANNELS", "(24, 48, 96, 192)", "MODEL.DYHEAD.NUM_CONVS", "1",
             "MODEL.DYHEAD.USE_CHECKPOINT", "False", "MODEL.WEIGHT", ""] + [str(v) for v in TINY_BERT_OPTS]
CHROMIUM = os.environ.get("GLIP_CHROMIUM", shutil.which("chromium") or shutil.which("chromium-browser") or "")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """A folder holding what tools/quickstart.py leaves: OUTPUT/quickstart/train/{config.yml, model_final.pth}."""
    from glip.modeling.detector import build_detection_model
    from glip.utils import cli

    root = tmp_path_factory.mktemp("cwd")
    train = root / web_demo.QUICKSTART_TRAIN
    cfg = cli.merge_config(cli.base_config(), CONFIG, TINY_OPTS + ["INPUT.MIN_SIZE_TEST", "320"])
    cli.save_config(cfg, str(train / "config.yml"))
    torch.save({"model": fill_model_(build_detection_model(cfg)).state_dict()}, train / "model_final.pth")
    return root


@pytest.fixture(scope="module")
def photo_png():
    rgb = load_golden("infer_chelsea_320.pt")["image"]["orig_rgb_uint8"].numpy()  # (300, 451, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(quickstart):
    """The demo's server with the quickstart model (loaded as the tool loads it), on a free port."""
    args = web_demo.build_parser().parse_args(["--min-image-size", "320"])
    cwd = os.getcwd()
    os.chdir(quickstart)
    try:
        model = web_demo.load_demo_model(args)
    finally:
        os.chdir(cwd)
    httpd = web_demo.make_server(web_demo.DemoApp(model, 0.3), "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", model
    httpd.shutdown()
    httpd.server_close()


def multipart(fields):
    """(content type, body) of a multipart/form-data request; bytes values are sent as a file."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="photo.png"\r\nContent-Type: image/png'
            parts.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def post(url, fields):
    content_type, body = multipart(fields)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_api_route_gives_the_predictors_detections(server, photo_png):
    import glip

    url, model = server
    status, body = post(url + "/api/detect", {"image": photo_png, "prompt": "cat, blanket", "mode": "names",
                                             "threshold": "0.0"})
    assert status == 200
    rows = json.loads(body)["detections"]
    expected = glip.predict(model, Image.open(io.BytesIO(photo_png)), ["cat", "blanket"], threshold=0.0)
    assert len(rows) == len(expected["scores"]) > 0
    assert [r["phrase"] for r in rows] == expected["phrases"]
    np.testing.assert_allclose([r["box"] for r in rows], expected["boxes"].numpy(), atol=0.051)
    np.testing.assert_allclose([r["score"] for r in rows], expected["scores"].numpy(), atol=5e-5)


def test_page_route_renders_image_and_table(server, photo_png):
    url, _ = server
    with urllib.request.urlopen(url + "/", timeout=30) as response:
        page = response.read().decode()
    assert 'id="detect-form"' in page and 'value="0.3"' in page
    status, body = post(url + "/detect", {"image": photo_png, "prompt": "a cat on a blanket", "mode": "caption",
                                         "threshold": "0"})
    page = body.decode()
    assert status == 200 and 'id="result-image"' in page and 'class="detection"' in page
    assert 'value="a cat on a blanket"' in page  # the form keeps what was typed


@pytest.mark.parametrize("fields, message", [
    ({"prompt": "cat", "mode": "names"}, "choose an image"),
    ({"image": b"not an image", "prompt": "cat", "mode": "names"}, "not an image"),
    ({"image": "PNG", "prompt": " ", "mode": "names"}, "type a caption"),
    ({"image": "PNG", "prompt": "cat", "mode": "names", "threshold": "2"}, "between 0 and 1"),
    ({"image": "PNG", "prompt": "cat", "mode": "names", "threshold": "high"}, "must be a number"),
])
def test_bad_requests_are_one_line_messages(server, photo_png, fields, message):
    url, _ = server
    fields = {k: (photo_png if v == "PNG" else v) for k, v in fields.items()}
    status, body = post(url + "/api/detect", fields)
    assert status == 400 and message in json.loads(body)["error"]
    status, body = post(url + "/detect", fields)
    assert status == 400 and 'id="error"' in body.decode() and message in body.decode()


def test_without_quickstart_model_the_tool_says_what_to_do(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "tools/web_demo.py"), "--port", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "run `python tools/quickstart.py` first" in done.stderr.strip().splitlines()[-1]


@pytest.mark.browser
def test_demo_in_headless_chromium(quickstart, photo_png, tmp_path):
    """The tool started as a user starts it (quickstart model by default), driven through Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    assert CHROMIUM, "no chromium on PATH (apt-get install chromium) and GLIP_CHROMIUM unset"
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(photo_png)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, str(REPO / "tools/web_demo.py"), "--port", "0", "--threshold",
                                "0.0", "--min-image-size", "320"], cwd=quickstart, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = _wait_for_server(process, timeout=600)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page()
            page.goto(url)
            page.set_input_files("#image", str(photo))
            page.fill("#prompt", "cat, blanket")
            page.check("input[name=mode][value=names]")
            page.fill("#threshold", "0.25")
            page.click("#submit")
            page.wait_for_selector("#result-image", timeout=300_000)
            size = page.eval_on_selector("#result-image", "img => [img.naturalWidth, img.naturalHeight]")
            phrases = page.locator("tr.detection td.phrase").all_inner_texts()
            scores = [float(s) for s in page.locator("tr.detection td.score").all_inner_texts()]
            heading = page.locator("h2").inner_text()
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            browser.close()
        _, answer = post(url + "/api/detect", {"image": photo_png, "prompt": "cat, blanket", "mode": "names",
                                               "threshold": "0.25"})
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert size == [451, 300]  # the drawn result, in the uploaded photo's pixels
    assert phrases and set(phrases) <= {"cat", "blanket"} and heading == f"{len(phrases)} detections"
    assert all(s > 0.25 for s in scores) and scores == sorted(scores, reverse=True)
    rows = json.loads(answer)["detections"]  # the same request through the JSON route
    assert phrases == [r["phrase"] for r in rows]
    np.testing.assert_allclose(scores, [r["score"] for r in rows], atol=1e-4)


def _wait_for_server(process, timeout):
    """The URL the tool prints once it serves (its output is read until then)."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving on "):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep draining the pipe
            return line.split()[-1]
    raise AssertionError("the demo did not start:\n" + "".join(lines[-30:]))
