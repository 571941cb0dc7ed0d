"""Weight files named by a hub reference or a URL, resolved to a local path through the Hugging Face cache.

Accepted names (`MODEL.WEIGHT`, `--weight`, `load_weights`):

* `hf://OWNER/REPO/PATH/IN/REPO` (optionally `hf://OWNER/REPO@REVISION/PATH`), e.g.
  `hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth`: `huggingface_hub.hf_hub_download`, so the file is
  downloaded once into the hub cache (`HF_HUB_CACHE`, default `~/.cache/huggingface/hub`) and read from there;
* `https://huggingface.co/OWNER/REPO/resolve/REVISION/PATH` (or `/blob/`): the same as its `hf://` form;
* any other `https://` / `http://` URL: downloaded once into `<hub cache>/glip-urls/<hash of the URL>/<file name>`
  with huggingface_hub's HTTP client.

With `HF_HUB_OFFLINE=1` only the cache is read; a file that is not there raises `HubFileNotCachedError` with a
one-line message. Anything else (a local path) is returned unchanged.
"""
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional
from urllib.parse import unquote, urlparse

from glip.utils.errors import WeightFileError, WeightFileNotFoundError

logger = logging.getLogger(__name__)

HF_SCHEME = "hf://"
URL_CACHE_FOLDER = "glip-urls"
_HF_HOSTS = ("huggingface.co", "hf.co")
_HF_URL = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/(?:resolve|blob)/(?P<revision>[^/]+)/(?P<path>.+)$")


class HubFileNotCachedError(WeightFileNotFoundError):
    """A hub file or URL that is not in the cache while downloads are off (or impossible)."""


class HubReference(NamedTuple):
    """A file in a Hugging Face model repository."""
    repo_id: str
    filename: str
    revision: Optional[str] = None

    def __str__(self):
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{revision}/{self.filename}"


def is_remote(name) -> bool:
    """True for the names this module resolves (`hf://`, `http(s)://`)."""
    return isinstance(name, str) and name.startswith((HF_SCHEME, "https://", "http://"))


def parse_hub_reference(name: str) -> Optional[HubReference]:
    """The repository file an `hf://` name or a huggingface.co file URL names; None for other names."""
    if name.startswith(HF_SCHEME):
        parts = name[len(HF_SCHEME):].split("/")
        if len(parts) < 3 or not all(parts):
            raise WeightFileError(f"{name!r} is not of the form hf://OWNER/REPO/PATH (e.g. "
                             "hf://GLIPModel/GLIP/glip_tiny_model_o365_goldg.pth)")
        repo, _, revision = parts[1].partition("@")
        return HubReference(f"{parts[0]}/{repo}", "/".join(parts[2:]), revision or None)
    url = urlparse(name)
    if url.scheme in ("http", "https") and url.hostname in _HF_HOSTS:
        match = _HF_URL.match(unquote(url.path))
        if match:
            return HubReference(match["repo"], match["path"], match["revision"])
    return None


def offline() -> bool:
    """HF_HUB_OFFLINE as the environment says now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """The hub cache folder (HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default), read now."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def resolve(name, cache: Optional[Path] = None) -> str:
    """A local path for `name`: hub files and URLs from the cache (downloaded first when allowed)."""
    if not is_remote(name):
        return name
    cache = Path(cache) if cache is not None else cache_dir()
    reference = parse_hub_reference(name)
    if reference is not None:
        return _resolve_hub_file(name, reference, cache)
    return _resolve_url(name, cache)


def _not_cached(name: str, cache: Path, why: str) -> HubFileNotCachedError:
    return HubFileNotCachedError(f"{name} is not in the Hugging Face cache {cache} and {why}; download it once "
                                 "with network access (HF_HUB_OFFLINE unset), or give a local file")


def _resolve_hub_file(name: str, reference: HubReference, cache: Path) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = hf_hub_download(reference.repo_id, reference.filename, revision=reference.revision,
                               cache_dir=str(cache), local_files_only=offline())
    except LocalEntryNotFoundError as err:  # (a subclass of EntryNotFoundError: first)
        why = "HF_HUB_OFFLINE=1 forbids downloading it" if offline() else "the hub cannot be reached"
        raise _not_cached(name, cache, why) from err
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise WeightFileNotFoundError(f"{name}: no such file in the hub ({type(err).__name__}); check the "
                                      "repository and file name") from err
    logger.info("%s -> %s", name, path)
    return path


def url_cache_path(url: str, cache: Path) -> Path:
    """Where a plain URL's file lives in the cache: `<cache>/glip-urls/<sha256(url)[:16]>/<file name>`."""
    filename = Path(unquote(urlparse(url).path)).name or "download"
    return cache / URL_CACHE_FOLDER / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] / filename


def _resolve_url(url: str, cache: Path) -> str:
    path = url_cache_path(url, cache)
    if path.is_file():
        return str(path)
    if offline():
        raise _not_cached(url, cache, "HF_HUB_OFFLINE=1 forbids downloading it")
    from huggingface_hub.file_download import http_get

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".incomplete")
    logger.info("downloading %s to %s", url, path)
    try:
        with open(partial, "wb") as out:
            http_get(url, out, displayed_filename=path.name)
    except Exception as err:  # network errors of any kind: one line naming the URL
        partial.unlink(missing_ok=True)
        raise _not_cached(url, cache, f"downloading it failed ({type(err).__name__}: {err})") from err
    os.replace(partial, path)
    return str(path)
