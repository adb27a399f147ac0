"""GSLM's published artefacts by name, cached the way s3prl caches upstream checkpoints.

``hubert100`` / ``cpc100`` resolve to the unit-LM tarballs and k-means ``km.bin`` files at
dl.fbaipublicfiles.com, downloaded to ``$S3PRL_CACHE/download/<sha256(url)>.<basename>`` (default
``~/.cache/s3prl/download``), s3prl's naming, so a file placed there by hand works offline. A failed download is a
:class:`~s3prl_speechprompt.errors.DownloadError` naming the URL and that path.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from s3prl_speechprompt.errors import DownloadError, MissingFileError

_BASE = "https://dl.fbaipublicfiles.com/textless_nlp/gslm"
ULM_URLS = {
    "hubert100": f"{_BASE}/hubert/lm_km100/hubert100_lm.tgz",
    "cpc100": f"{_BASE}/cpc/lm_km100/cpc100_lm.tgz",
}
KMEANS_URLS = {
    "hubert100": f"{_BASE}/hubert/km100/km.bin",
    "cpc100": f"{_BASE}/cpc/km100/km.bin",
}


def cache_root() -> Path:
    return Path(os.environ.get("S3PRL_CACHE", Path.home() / ".cache" / "s3prl")) / "download"


def cached_path(url: str) -> Path:
    return cache_root() / f"{hashlib.sha256(url.encode()).hexdigest()}.{url.rsplit('/', 1)[-1]}"


def fetch(url: str, refresh: bool = False) -> Path:
    """Local copy of ``url``; downloads atomically when missing, with an actionable error offline."""
    path = cached_path(url)
    if path.is_file() and not refresh:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, path)
    except Exception as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DownloadError(f"cannot download {url} ({type(e).__name__}: {e}); no network? Download it on another "
                            f"machine and place it at {path} (the cache root is $S3PRL_CACHE/download, default "
                            f"~/.cache/s3prl/download)") from e
    return path


def resolve_ulm(name_or_path: str) -> Path:
    """A local unit-LM directory/file, or a GSLM name unpacked next to its cached tarball."""
    if name_or_path not in ULM_URLS:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise MissingFileError(f"unit LM {name_or_path!r}: no such file or directory, and not a GSLM name "
                                   f"({', '.join(ULM_URLS)})")
        return path
    tarball = fetch(ULM_URLS[name_or_path])
    out = tarball.with_suffix("")
    if not (out / "dict.txt").is_file():
        tmp = Path(tempfile.mkdtemp(dir=tarball.parent))
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError(f"{tarball}: not a readable tarball ({type(e).__name__}: {e}); the download may be "
                                f"incomplete: delete it and retry, or place a good copy of "
                                f"{ULM_URLS[name_or_path]} there") from None
        found = next(iter(sorted(tmp.rglob("dict.txt"))), None)
        if found is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError(f"{tarball}: no dict.txt inside; the download may be corrupt (delete it and retry)")
        if out.exists():
            shutil.rmtree(out)
        os.replace(found.parent, out)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_kmeans(name_or_path: str) -> Path:
    if name_or_path in KMEANS_URLS:
        return fetch(KMEANS_URLS[name_or_path])
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"k-means {name_or_path!r}: no such file, and not a GSLM name "
                               f"({', '.join(KMEANS_URLS)})")
    return path
