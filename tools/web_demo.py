"""A web page for trying GLIP: upload an image, type a caption or class names, set the threshold, see the boxes.

Usage:
    python tools/web_demo.py [--config-file FILE --weight FILE] [--host 127.0.0.1] [--port 7860]
        [--threshold 0.5] [--min-image-size 800] [--device cpu] [KEY VALUE ...]

Without `--config-file` it serves the model `tools/quickstart.py` trained (`OUTPUT/quickstart/train/config.yml`
with `model_final.pth` beside it). `--weight` takes a path, `hf://OWNER/REPO/FILE` or a URL. The server uses
only the standard library (`http.server`); it runs on the CPU unless `--device` says otherwise.

Routes: `GET /` the page; `POST /detect` (multipart form: `image`, `prompt`, `mode` = names | caption,
`threshold`) the page with the drawn image and a table of detections; `POST /api/detect` the same as JSON;
`GET /health` "ok". The line `serving on http://HOST:PORT` is printed when the server is ready.
"""
import argparse
import base64
import email.parser
import email.policy
import html
import importlib.util
import io
import json
import logging
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if importlib.util.find_spec("glip") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glip.utils.errors import ConfigFileNotFoundError, UserError, run_tool  # noqa: E402

logger = logging.getLogger("glip.tools.web_demo")

QUICKSTART_TRAIN = Path("OUTPUT") / "quickstart" / "train"
MAX_UPLOAD_BYTES = 25 * 2 ** 20


class DemoInputError(UserError):
    """A request the demo cannot answer (the message is shown to the user)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="GLIP web demo: a page that detects a caption's phrases or a "
                                                 "list of class names in an uploaded image")
    parser.add_argument("--config-file", default=None, metavar="FILE",
                        help=f"model config (default: {QUICKSTART_TRAIN / 'config.yml'}, the quickstart's)")
    parser.add_argument("--weight", default=None, metavar="FILE",
                        help="checkpoint: path, hf://OWNER/REPO/FILE or URL (default: MODEL.WEIGHT; with the "
                             "quickstart's config, model_final.pth beside it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port (0: any free port)")
    parser.add_argument("--threshold", type=float, default=0.5, help="default score threshold of the page")
    parser.add_argument("--min-image-size", type=int, default=800,
                        help="resize the short side to this before inference (0: keep the size)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--debug", action="store_true", help="on a bad input, also print the traceback")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="config overrides as KEY VALUE pairs")
    return parser


def model_files(config_file: Optional[str], weight: Optional[str]) -> Tuple[str, Optional[str]]:
    """(config, weights) to serve: as given, or the quickstart's trained model."""
    if config_file:
        if not Path(config_file).is_file():
            raise ConfigFileNotFoundError(f"config file not found: {config_file}; check the path")
        return config_file, weight
    config = QUICKSTART_TRAIN / "config.yml"
    if not config.is_file():
        raise ConfigFileNotFoundError(f"no --config-file and no quickstart model at {config}: run "
                                "`python tools/quickstart.py` first, or give --config-file and --weight")
    return str(config), weight or str(QUICKSTART_TRAIN / "model_final.pth")


class DemoApp:
    """The model behind the page: one request runs at a time."""

    def __init__(self, model, default_threshold: float = 0.5):
        self.model = model
        self.default_threshold = default_threshold
        self._lock = threading.Lock()

    def detect(self, image_bytes: bytes, prompt: str, mode: str, threshold: float) -> Tuple[bytes, List[Dict]]:
        """(PNG of the image with the detections drawn, detections in original pixels)."""
        import glip.api as api

        image = _read_image(image_bytes)
        caption = _caption(prompt, mode)
        if not 0.0 <= threshold <= 1.0:
            raise DemoInputError(f"the threshold must be between 0 and 1, got {threshold}")
        with self._lock:
            try:
                result = api.predict(self.model, image, caption, threshold=threshold)
            except (ValueError, TypeError) as err:  # caption problems: one line for the user
                raise DemoInputError(str(err)) from err
        drawn = api.annotate(image, result)
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        rows = [{"phrase": phrase, "score": round(float(score), 4), "label": int(label),
                 "box": [round(float(v), 1) for v in box]}
                for box, score, label, phrase in zip(result["boxes"].tolist(), result["scores"].tolist(),
                                                     result["labels"].tolist(), result["phrases"])]
        return buffer.getvalue(), rows


def _read_image(data: bytes):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DemoInputError("choose an image to upload")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DemoInputError(f"the upload is not an image this demo can read ({err})") from err


def _caption(prompt: str, mode: str):
    prompt = (prompt or "").strip()
    if not prompt:
        raise DemoInputError("type a caption or some class names")
    if mode == "names":
        names = [name.strip() for name in prompt.split(",") if name.strip()]
        if not names:
            raise DemoInputError("type class names separated by commas")
        return names
    if mode != "caption":
        raise DemoInputError(f"unknown prompt mode {mode!r} (names or caption)")
    return prompt


def parse_form(content_type: str, body: bytes) -> Dict[str, object]:
    """Fields of a multipart/form-data body: text fields as str, file fields as bytes."""
    if not content_type.startswith("multipart/form-data"):
        raise DemoInputError("send the form as multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields: Dict[str, object] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        fields[name] = payload if part.get_filename() is not None else payload.decode("utf-8", "replace")
    return fields


def render_page(values: Dict[str, object], image_png: Optional[bytes] = None, rows: Sequence[Dict] = (),
                error: Optional[str] = None) -> bytes:
    """The page: the form (keeping the last values), then the error or the result image and table."""
    prompt = html.escape(str(values.get("prompt", "")))
    threshold = html.escape(str(values.get("threshold", "0.5")))
    mode = values.get("mode", "names")
    checked = {m: " checked" if mode == m else "" for m in ("names", "caption")}
    parts = [_PAGE_HEAD, f"""<form id="detect-form" method="post" action="/detect" enctype="multipart/form-data">
<label>Image <input id="image" type="file" name="image" accept="image/*" required></label>
<label>Prompt <input id="prompt" type="text" name="prompt" size="60" value="{prompt}"
 placeholder="person, bicycle, traffic light  -or-  a man riding a bicycle"></label>
<span><label><input type="radio" name="mode" value="names"{checked['names']}> class names (comma-separated)</label>
<label><input type="radio" name="mode" value="caption"{checked['caption']}> caption</label></span>
<label>Threshold <input id="threshold" type="number" name="threshold" min="0" max="1" step="0.01"
 value="{threshold}"></label>
<button id="submit" type="submit">Detect</button>
</form>"""]
    if error:
        parts.append(f'<p id="error" class="error">{html.escape(error)}</p>')
    if image_png is not None:
        encoded = base64.b64encode(image_png).decode("ascii")
        parts.append(f'<h2>{len(rows)} detection{"s" if len(rows) != 1 else ""}</h2>')
        parts.append(f'<img id="result-image" alt="detections" src="data:image/png;base64,{encoded}">')
        parts.append('<table id="detections"><tr><th>phrase</th><th>score</th><th>box (x1, y1, x2, y2)</th></tr>')
        for row in rows:
            box = ", ".join(f"{v:.1f}" for v in row["box"])
            parts.append(f'<tr class="detection" data-label="{row["label"]}"><td class="phrase">'
                         f'{html.escape(row["phrase"])}</td><td class="score">{row["score"]:.4f}</td>'
                         f'<td class="box">{box}</td></tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


_PAGE_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>GLIP demo</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em} form{display:flex;flex-direction:column;gap:.6em;
align-items:flex-start} img{max-width:100%;margin-top:1em;border:1px solid #ccc} table{border-collapse:collapse;
margin-top:1em} td,th{border:1px solid #ccc;padding:.2em .6em} .error{color:#b00}</style></head><body>
<h1>GLIP: grounded detection</h1>"""


class Handler(BaseHTTPRequestHandler):
    """Routes of the demo (`server.app` is the DemoApp)."""

    def log_message(self, fmt, *args):
        logger.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            values = {"threshold": self.server.app.default_threshold}
            self._send(HTTPStatus.OK, render_page(values), "text/html; charset=utf-8")
        elif self.path == "/health":
            self._send(HTTPStatus.OK, b"ok", "text/plain")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_POST(self):
        if self.path not in ("/detect", "/api/detect"):
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        as_json = self.path == "/api/detect"
        values: Dict[str, object] = {}
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                raise DemoInputError(f"the upload is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB")
            values = parse_form(self.headers.get("Content-Type", ""), self.rfile.read(length))
            threshold = _threshold(values.get("threshold"), self.server.app.default_threshold)
            png, rows = self.server.app.detect(values.get("image") or b"", str(values.get("prompt", "")),
                                               str(values.get("mode", "names")), threshold)
        except DemoInputError as err:
            values.pop("image", None)
            if as_json:
                self._send(HTTPStatus.BAD_REQUEST, json.dumps({"error": str(err)}).encode(), "application/json")
            else:
                self._send(HTTPStatus.BAD_REQUEST, render_page(values, error=str(err)), "text/html; charset=utf-8")
            return
        if as_json:
            self._send(HTTPStatus.OK, json.dumps({"detections": rows}).encode(), "application/json")
        else:
            values.pop("image", None)
            self._send(HTTPStatus.OK, render_page(values, png, rows), "text/html; charset=utf-8")


def _threshold(value, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise DemoInputError(f"the threshold must be a number, got {value!r}") from err


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """An HTTP server for `app` (not started; `serve_forever()` runs it)."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.app = app
    return server


def load_demo_model(args):
    """The `glip.api` model for the parsed command line."""
    import glip.api as api

    config, weight = model_files(args.config_file, args.weight)
    logger.info("serving %s with weights %s", config, weight or "(MODEL.WEIGHT)")
    return api.load_model(config, weight, device=args.device, opts=list(args.opts or []),
                          threshold=args.threshold, min_image_size=args.min_image_size or None)


def serve(args) -> int:
    """Load the model, then serve until Ctrl-C (bad inputs raise a UserError before the server starts)."""
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold}")
    model = load_demo_model(args)
    server = make_server(DemoApp(model, args.threshold), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: parse `argv`, serve, return the exit code (bad inputs: one line on stderr and 2)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return run_tool(lambda arguments: serve(build_parser().parse_args(arguments)), argv)


if __name__ == "__main__":
    sys.exit(main())
