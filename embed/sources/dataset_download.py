"""Named datasets that fetch themselves: ``--dataset tiny-imagenet`` or ``--dataset imagenette``.

A named dataset is looked for in the datasets folders ($RETRIEVAL_DATASETS, ``os.pathsep``-separated;
default ``data/datasets`` then ``../shared/datasets``) and, when none holds it, downloaded into the
first one: checksum verified, progress shown, written atomically (an interrupted download leaves
nothing a later run would trust), then extracted with checks of our own, because torchvision's
``extract_archive`` calls ``extractall`` with no filter (Python 3.11): entries that would land outside
the target folder (``..``, absolute paths), links and special files, and archives expanding beyond
a size cap are refused. ``--data-root`` always wins: nothing is downloaded when one is given.

``RETRIEVAL_DATASET_URL_<NAME>`` (e.g. ``RETRIEVAL_DATASET_URL_TINY_IMAGENET``) replaces a dataset's
address, e.g. with a local server in tests; ``RETRIEVAL_DATASET_MD5_<NAME>`` gives that file's md5.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, cast

from embed.common.settings import DATASETS_ENV, RetrievalSettings, given_or_current
from embed.sources.datasets import DatasetError
from embed.sources.download import DownloadError, download

log = logging.getLogger(__name__)

GIB = 1 << 30


@dataclass(frozen=True)
class DatasetSource:
    name: str  # the --dataset name
    url: str
    folder: str  # the archive's top folder; becomes the data root
    split: str  # a split folder the extracted data set must have
    md5: Optional[str]  # of the archive at ``url``
    max_bytes: int  # refuse archives that expand beyond this
    max_entries: int
    note: str = ""

    @property
    def env_key(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def archive_name(self) -> str:
        return PurePosixPath(self.url.split("?")[0]).name or f"{self.name}.archive"

    def resolved(self, config: RetrievalSettings) -> "DatasetSource":
        """This source with the address (and md5) the settings give (RETRIEVAL_DATASET_URL_<NAME>), if they do."""
        url = config.dataset_urls.get(self.env_key)
        if not url:
            return self
        md5 = config.dataset_md5s.get(self.env_key)
        return DatasetSource(self.name, url, self.folder, self.split, md5, self.max_bytes, self.max_entries, self.note)


DATASETS: Dict[str, DatasetSource] = {
    # md5 as published in public Tiny-ImageNet loaders (e.g. the TinyImageNet VisionDataset of
    # lvyilin/pytorch-fgvc-dataset); not verified against the file from here (no internet).
    "tiny-imagenet": DatasetSource(
        "tiny-imagenet",
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        "tiny-imagenet-200",
        "val",
        md5="90528d7ca1a48142e341f4ef8d21d0de",
        max_bytes=2 * GIB,
        max_entries=130_000,
        note="200 ImageNet classes, 64x64 px; val: 10,000 images",
    ),
    # md5 from torchvision.datasets.Imagenette._ARCHIVES["320px"]; not verified from here either.
    "imagenette": DatasetSource(
        "imagenette",
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
        "imagenette2-320",
        "val",
        md5="3df6f0d01a2c9592104656642f5e78a3",
        max_bytes=2 * GIB,
        max_entries=20_000,
        note="10 ImageNet classes, 320 px short side; val: 3,925 images in synset folders",
    ),
}


def datasets_dirs(config: RetrievalSettings) -> List[Path]:
    return [Path(p).expanduser() for p in config.datasets_dirs]


def searched_folders(config: RetrievalSettings) -> str:
    """The datasets folders as absolute paths: the defaults are relative to the current directory, which a message
    showing ``../shared/datasets`` leaves the reader to work out."""
    return ", ".join(str(p.resolve()) for p in datasets_dirs(config))


def get_source(name: str, config: RetrievalSettings) -> DatasetSource:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)} (or pass --data-root DIR)")
    return DATASETS[name].resolved(config)


def find_dataset(source: DatasetSource, config: RetrievalSettings) -> Optional[Path]:
    for base in datasets_dirs(config):
        root = base / source.folder
        if (root / source.split).is_dir():
            return root.resolve()
    return None


def ensure_dataset(name: str, progress: bool = True, settings: Optional[RetrievalSettings] = None) -> Path:
    """The data root of a named dataset, downloading and extracting it first when it is not on disk. ``settings``
    say where datasets are looked for and from where they download (the entry point's; none: the environment's)."""
    config = given_or_current(settings)
    source = get_source(name, config)
    found = find_dataset(source, config)
    if found is not None:
        return found
    target = datasets_dirs(config)[0].resolve()
    if (target / source.folder).exists():
        raise DatasetError(
            f"{target / source.folder} exists but has no {source.split} folder: remove it to download "
            f"{name} again, or pass --data-root"
        )
    log.info("%s is not in %s: downloading %s", name, searched_folders(config), source.url)
    archive = target / source.archive_name
    try:
        download(source.url, archive, desc=source.archive_name, md5=source.md5, progress=progress)
    except DownloadError as e:
        raise DatasetError(
            f"could not download {name}: {e}\n{name} ({source.folder}/) was looked for in {searched_folders(config)}. "
            f"If you have it elsewhere, set {DATASETS_ENV} to the folder holding {source.folder}/ "
            f"({os.pathsep}-separated for several), or pass --data-root DIR/{source.folder}. Otherwise download "
            f"{source.url} yourself and extract it into one of those folders."
        ) from None
    try:
        root = extract_archive(archive, target, source.folder, source.max_bytes, source.max_entries, progress)
    finally:
        archive.unlink(missing_ok=True)  # extracted, or refused: either way a fresh download is the next step
    if not (root / source.split).is_dir():
        raise DatasetError(f"{archive.name} has no {source.folder}/{source.split} folder")
    return root


class UnsafeArchive(DatasetError):
    """An archive entry that would escape the target folder, a link, or an archive too large."""


def extract_archive(
    archive: Path, target: Path, folder: str, max_bytes: int, max_entries: int, progress: bool = True
) -> Path:
    """Extract ``archive`` (zip or tar[.gz]) whose entries all lie under ``folder/`` into ``target/folder``.

    Every entry is checked before anything is written, what is written is counted against ``max_bytes`` (declared
    sizes can lie), and a tar must end where its last entry does; the result appears under its final name only
    when the whole archive was extracted (a staging folder, then a rename).
    """
    from tqdm import tqdm

    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.extract-", dir=target))
    try:
        with ArchiveReader(archive) as entries:
            members = list(entries.list())
            _check_members(members, folder, max_bytes, max_entries, archive.name)
            written = 0
            for member in tqdm(members, unit="file", desc=f"extract {archive.name}", disable=not progress):
                dest = staging.joinpath(*PurePosixPath(member.name).parts)
                if member.is_dir:
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with entries.open(member) as src, open(dest, "xb") as out:
                    # declared sizes can lie: count what is actually written
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise UnsafeArchive(f"{archive.name} expands beyond {max_bytes / GIB:.1f} GiB")
                        out.write(block)
            entries.check_end()
        final = target / folder
        if final.exists():
            raise DatasetError(f"{final} appeared while extracting; remove it or pass --data-root {final}")
        os.replace(staging / folder, final)
        return final.resolve()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{archive.name} is damaged or not an archive ({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    is_dir: bool
    is_file: bool
    handle: object


class ArchiveReader:
    """One interface over zip and tar entries: list them, open one for reading."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: Optional[zipfile.ZipFile] = None
        self.tar: Optional[tarfile.TarFile] = None

    def __enter__(self) -> "ArchiveReader":
        if zipfile.is_zipfile(self.path):
            self.zip = zipfile.ZipFile(self.path)
        else:
            self.tar = tarfile.open(self.path, mode="r:*")
        return self

    def __exit__(self, *exc) -> None:
        archive = self.zip or self.tar
        assert archive is not None  # opened by __enter__
        archive.close()

    def list(self) -> Iterator[_Member]:
        if self.zip is not None:
            for info in self.zip.infolist():
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                is_dir = info.is_dir()
                # zip entries carry a unix mode only when made on unix; no mode means a plain file
                is_file = not is_dir and kind in (0, stat.S_IFREG)
                if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                    # stored data is its own size: a header that says otherwise is lying about one of them
                    raise UnsafeArchive(
                        f"{self.path.name}: entry {info.filename!r} declares {info.file_size} bytes "
                        f"but stores {info.compress_size}"
                    )
                yield _Member(info.filename, info.file_size, is_dir, is_file, info)
        else:
            assert self.tar is not None  # opened by __enter__
            for entry in self.tar:
                yield _Member(entry.name, entry.size, entry.isdir(), entry.isreg(), entry)

    def check_end(self) -> None:
        """Refuse a tar archive with data after its last entry (call after reading the entries, in order).

        tarfile ends the listing silently at the first block that is not a header. A clean archive ends there
        with zeros (or the file's end); anything else is data that no header accounts for, e.g. an entry whose
        header understates its size: the rest of it, and every entry after it, would be dropped unseen. (Read
        once the entries have been: a compressed tar seeks forward cheaply, backward only by decompressing again.)
        """
        if self.tar is None:
            return
        self.tar.fileobj.seek(self.tar.offset)
        block = self.tar.fileobj.read(tarfile.BLOCKSIZE)
        if block.strip(b"\0"):
            raise UnsafeArchive(
                f"{self.path.name}: data at byte {self.tar.offset} belongs to no entry (a header "
                f"declares less than its entry holds, or the archive is damaged)"
            )

    def open(self, member: _Member):
        if self.zip is not None:
            return self.zip.open(cast(zipfile.ZipInfo, member.handle))
        assert self.tar is not None  # opened by __enter__
        return self.tar.extractfile(cast(tarfile.TarInfo, member.handle))


def _check_members(members: List[_Member], folder: str, max_bytes: int, max_entries: int, label: str) -> None:
    if len(members) > max_entries:
        raise UnsafeArchive(f"{label} has {len(members)} entries, more than the {max_entries} expected")
    total = 0
    seen: Dict[tuple, bool] = {}  # normalised path -> is a directory
    for m in members:
        bad = _unsafe_reason(m, folder)
        if bad:
            raise UnsafeArchive(f"{label}: refusing entry {m.name!r}: {bad}")
        parts = PurePosixPath(m.name.replace("\\", "/")).parts
        if parts in seen and not (seen[parts] and m.is_dir):
            # a second entry under one name would overwrite (or, as a folder, sit on) the first
            raise UnsafeArchive(f"{label}: refusing entry {m.name!r}: the name appears twice in the archive")
        seen[parts] = m.is_dir
        total += m.size
    if total > max_bytes:
        raise UnsafeArchive(f"{label} declares {total / GIB:.1f} GiB, more than the {max_bytes / GIB:.1f} GiB cap")


def _unsafe_reason(m: _Member, folder: str) -> Optional[str]:
    name = m.name.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "'..' would place it outside the target folder"
    if not (m.is_dir or m.is_file):
        return "links and special files are not extracted"
    if "\x00" in name or not path.parts or path.parts[0] != folder:
        return f"not under {folder}/"
    return None
