"""Where to load a HuggingFace language model's files from (local folder, local hub cache, shipped copy, hub).

GLIP names its text encoder by hub id (cfg.MODEL.LANGUAGE_BACKBONE.MODEL_TYPE = "bert-base-uncased"). Inference
and tests must work offline, so a hub id is first looked up in the local HuggingFace cache, then in the copies
shipped under glip/assets (vocab + config only, no weights), and only then, when the hub is not in offline mode,
handed to `from_pretrained` to download.
"""
import logging
import os
from pathlib import Path
from typing import Sequence

from huggingface_hub import try_to_load_from_cache
from transformers.utils import is_offline_mode

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {"bert-base-uncased": ASSETS_DIR / "bert-base-uncased"}

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer_config.json")
CONFIG_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _first_existing(folder: Path, filenames: Sequence[str]):
    for name in filenames:
        if (folder / name).is_file():
            return name
    return None


def _cached_snapshot(repo_id: str, filenames: Sequence[str]):
    """The local hub-cache snapshot folder holding one of `filenames` for `repo_id`, or None."""
    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except ValueError:
            return None
        if isinstance(hit, str):
            return os.path.dirname(hit)
    return None


def resolve_pretrained(name_or_path: str, filenames: Sequence[str], what: str = "files") -> str:
    """A folder (or, online, the hub id itself) from which `from_pretrained` can read one of `filenames`.

    Order: an existing local folder; the local hub cache; the copy shipped in glip/assets; the hub id when not
    offline. Raises FileNotFoundError naming `name_or_path` when none of them applies.
    """
    name_or_path = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if _first_existing(path, filenames) is None:
            raise FileNotFoundError(f"{what} for '{name_or_path}': the folder has none of {list(filenames)}")
        logger.info("Loading %s from local folder %s", what, path)
        return str(path)
    snapshot = _cached_snapshot(name_or_path, filenames)
    if snapshot is not None:
        logger.info("Loading %s of '%s' from the local HuggingFace cache (%s)", what, name_or_path, snapshot)
        return snapshot
    shipped = SHIPPED.get(name_or_path)
    if shipped is not None and _first_existing(shipped, filenames) is not None:
        logger.info("'%s' is not in the HuggingFace cache; loading %s from the shipped copy %s",
                    name_or_path, what, shipped)
        return str(shipped)
    if not is_offline_mode():
        logger.info("Loading %s of '%s' from the HuggingFace hub", what, name_or_path)
        return name_or_path
    raise FileNotFoundError(
        f"Cannot find {what} for '{name_or_path}': not a local folder, not in the HuggingFace cache"
        f"{', no shipped copy' if shipped is None else ', not in the shipped copy'} and the hub is offline "
        f"(HF_HUB_OFFLINE). Looked for one of {list(filenames)}."
    )
