"""Writing caption data in the layout ``CaptionTSV`` reads (``glip.data.datasets.caption``), resumably.

A shard ``<name>`` in a folder is ``<name>.img.tsv`` (``key \\t base64 image``), ``<name>.label.tsv``
(``key \\t json``), ``<name>.hw.tsv`` (``key \\t [{"height", "width"}]``), ``<name>.yaml`` naming them, plus two
bookkeeping files: ``<name>.keys.txt`` (every key handled, also those written without a row) and
``<name>.progress.json`` (the byte length of each file and running counts at the last commit, replaced
atomically). Reopening a shard truncates every file to its committed length, so rows written after the last
commit (a killed run) are dropped and redone, never duplicated.
"""
import base64
import json
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import yaml

from glip.data.datasets.tsv import create_lineidx

PARTS = ("img", "label", "hw", "keys")


def _tsv_name(name: str, part: str) -> str:
    return "{}.{}.{}".format(name, part, "txt" if part == "keys" else "tsv")


def encode_image(data: bytes) -> str:
    """Image file bytes as the base64 text of an image TSV row."""
    return base64.b64encode(data).decode("ascii")


def label_record(caption: str, image_size, boxes: Sequence[Sequence[float]], scores: Sequence[float],
                 spans: Sequence[Sequence[Sequence[int]]], version: str = "v1") -> dict:
    """The label json of one image: ``caption``, ``img_w`` / ``img_h`` (``image_size = (w, h)``), and the boxes
    (xyxy pixels) with their scores and phrase spans, per box (v1) or per entity (v2: boxes with equal spans
    grouped, entities in order of first appearance)."""
    record = {"caption": caption, "img_w": int(image_size[0]), "img_h": int(image_size[1])}
    boxes = [[round(float(v), 2) for v in b] for b in boxes]
    scores = [round(float(s), 4) for s in scores]
    spans = [[[int(beg), int(end)] for beg, end in s] for s in spans]
    if version == "v1":
        record.update(bboxes=boxes, scores=scores, tokens_positive=spans)
        return record
    if version != "v2":
        raise ValueError("caption format version must be v1 or v2, got {!r}".format(version))
    entities: "OrderedDict[str, dict]" = OrderedDict()
    for box, score, span in zip(boxes, scores, spans):
        entity = entities.setdefault(json.dumps(span), {"spans": span, "boxes": [], "scores": []})
        entity["boxes"].append(box)
        entity["scores"].append(score)
    record.update(bboxes=[e["boxes"] for e in entities.values()], scores=[e["scores"] for e in entities.values()],
                  tokens_positive=[e["spans"] for e in entities.values()])
    return record


def check_key(key: str) -> str:
    if not key or any(c in key for c in "\t\r\n"):
        raise ValueError("a row key must be non-empty without tabs or line breaks, got {!r}".format(key))
    return key


def write_dataset_yaml(path: str, files: Dict[str, str], version: str) -> str:
    """A dataset yaml naming ``files`` (``{"img", "label", "hw"}``: paths relative to the yaml) and the format."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(dict(files, caption_format_version=version), f, sort_keys=False)
    os.replace(tmp, path)
    return path


class ShardWriter:
    """Appends rows to the shard ``name`` in ``folder`` (see the module docstring); ``commit()`` makes the rows
    written so far durable and records them; ``close()`` commits and writes the line indexes and the yaml."""

    def __init__(self, folder: str, name: str, version: str = "v1"):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.name, self.version = folder, name, version
        self.paths = {part: os.path.join(folder, _tsv_name(name, part)) for part in PARTS}
        self.progress_path = os.path.join(folder, name + ".progress.json")
        progress = read_progress(self.progress_path)
        lengths = progress.get("bytes", {})
        self.counts: Dict[str, float] = dict(progress.get("counts", {}))
        self.files = {}
        for part, path in self.paths.items():
            with open(path, "ab"):
                pass
            os.truncate(path, int(lengths.get(part, 0)))
            self.files[part] = open(path, "ab")

    def done_keys(self) -> List[str]:
        """Keys handled in committed rows (the file was truncated to them on opening)."""
        return read_keys(self.paths["keys"])

    def add(self, key: str, image_b64: Optional[str] = None, record: Optional[dict] = None, **counts: float):
        """Record ``key`` as handled; with ``record`` also write its image, label and size rows. ``counts`` are
        added to the shard's running counts."""
        check_key(key)
        if record is not None:
            self.files["img"].write("{}\t{}\n".format(key, image_b64).encode("utf-8"))
            self.files["label"].write("{}\t{}\n".format(key, json.dumps(record)).encode("utf-8"))
            size = [{"height": record["img_h"], "width": record["img_w"]}]
            self.files["hw"].write("{}\t{}\n".format(key, json.dumps(size)).encode("utf-8"))
        self.files["keys"].write((key + "\n").encode("utf-8"))
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value

    def commit(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
        progress = {"bytes": {part: f.tell() for part, f in self.files.items()}, "counts": self.counts,
                    "version": self.version}
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(progress, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.progress_path)

    def close(self) -> str:
        """Commit, close, index the TSVs; returns the shard's yaml path."""
        self.commit()
        for f in self.files.values():
            f.close()
        for part in ("img", "label", "hw"):
            create_lineidx(self.paths[part], os.path.splitext(self.paths[part])[0] + ".lineidx")
        files = {part: os.path.basename(self.paths[part]) for part in ("img", "label", "hw")}
        return write_dataset_yaml(os.path.join(self.folder, self.name + ".yaml"), files, self.version)


def read_progress(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def read_keys(path: str) -> List[str]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def shard_names(folder: str) -> List[str]:
    """Names of the shards with a progress record in ``folder``, sorted."""
    suffix = ".progress.json"
    return sorted(f[: -len(suffix)] for f in os.listdir(folder) if f.endswith(suffix)) if os.path.isdir(folder) else []


def committed_keys(folder: str) -> set:
    """Keys of the committed rows of every shard in ``folder`` (whatever number of processes wrote them)."""
    keys = set()
    for name in shard_names(folder):
        progress = read_progress(os.path.join(folder, name + ".progress.json"))
        path = os.path.join(folder, _tsv_name(name, "keys"))
        length = int(progress.get("bytes", {}).get("keys", 0))
        if os.path.isfile(path):
            with open(path, "rb") as f:
                keys.update(line.decode("utf-8").rstrip("\n") for line in f.read(length).splitlines() if line)
    return keys


def merge_shards(folder: str, names: Iterable[str], out_dir: str, version: str) -> str:
    """``out_dir/dataset.yaml`` over the shards ``names`` of ``folder``: the shard's own files when there is one,
    else their concatenation into ``out_dir/{img,label,hw}.tsv`` (row order: shard by shard)."""
    names = list(names)
    yaml_path = os.path.join(out_dir, "dataset.yaml")
    if len(names) == 1:
        rel = os.path.relpath(folder, out_dir)
        files = {part: os.path.join(rel, _tsv_name(names[0], part)) for part in ("img", "label", "hw")}
        return write_dataset_yaml(yaml_path, files, version)
    files = {}
    for part in ("img", "label", "hw"):
        target = os.path.join(out_dir, part + ".tsv")
        with open(target + ".tmp", "wb") as out:
            for name in names:
                with open(os.path.join(folder, _tsv_name(name, part)), "rb") as f:
                    while True:
                        chunk = f.read(1 << 22)
                        if not chunk:
                            break
                        out.write(chunk)
        os.replace(target + ".tmp", target)
        create_lineidx(target, os.path.splitext(target)[0] + ".lineidx")
        files[part] = part + ".tsv"
    return write_dataset_yaml(yaml_path, files, version)
