"""Downloads that never leave a half-written file behind: stream to a temp file, check, then rename.

Used for dataset archives and model checkpoints. A file appears under its final name only after the
whole body arrived (the length the server announced, when it announced one), its checksum matched
(when one is known) and the caller's validation accepted it; every failure removes the temp file,
so an interrupted run restarts cleanly from nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)

USER_AGENT = "backbone-retrieval/0.1 (+https://github.com)"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or gave something unusable; the message says how to get the file by hand."""


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = CHUNK) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def staged_file(dest: Path) -> Iterator[Path]:
    """A temp path next to ``dest``; renamed onto ``dest`` when the block ends without an error, else deleted."""
    dest = Path(dest)
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the real suffix last: readers that go by extension (safetensors) read the staged file too
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    os.close(fd)
    done = False
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
        done = True
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after the rename; the failed attempt otherwise
        if not done:
            # a failed first download leaves no empty folders behind (a later run would take them for a cache)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty: something else lives there now


def fetch_url(url: str, out: Path, desc: str, timeout: float = 60.0, progress: bool = True) -> None:
    """Stream ``url`` (http or https) into ``out`` with a progress bar; a short body is an error."""
    from tqdm import tqdm

    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    received, total = 0, None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(out, "wb") as fh:
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and announced.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress
            ) as bar:
                while block := response.read(CHUNK):
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
    except http.client.IncompleteRead as e:
        raise DownloadError(f"downloading {url} stopped after {received + len(e.partial)} of {total} bytes") from None
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        # HTTPException: IncompleteRead and friends when the connection is cut mid-body
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"downloading {url} failed: {reason}") from None
    if total is not None and received != total:
        raise DownloadError(f"downloading {url} stopped after {received} of {total} bytes")


def download(
    url: str,
    dest: Path,
    *,
    desc: str,
    md5: Optional[str] = None,
    sha256: Optional[str] = None,
    validate: Optional[Callable[[Path], None]] = None,
    fetch: Optional[Callable[[Path], None]] = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying checksums and ``validate`` (which raises on a bad file).

    ``fetch`` replaces the plain HTTP transfer (e.g. gdown for Google Drive); it writes the given path.
    """
    dest = Path(dest)
    log.info("downloading %s -> %s", url, dest)
    with staged_file(dest) as tmp:
        if fetch is not None:
            fetch(tmp)
        else:
            fetch_url(url, tmp, desc, progress=progress)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise DownloadError(f"downloading {url} gave an empty file")
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected and (got := file_digest(tmp, algorithm)) != expected.lower():
                raise DownloadError(
                    f"{url}: {algorithm} {got} does not match the expected {expected} (damaged or changed file)"
                )
        if validate is not None:
            validate(tmp)
    return dest


def looks_like_html(path: Path) -> bool:
    """Whether a file starts like a web page (Drive's quota, virus-scan or sign-in page instead of the file)."""
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<body"))
