"""Dataset archives: every kind of entry a zip or tar can carry, and headers that understate sizes.

Refused: links (symbolic and hard), devices, fifos, sockets, absolute paths, ``..``, entries outside the data
set's folder and names that appear twice; archives whose headers declare less than they hold; archives that
write more than the cap. Refused means an error that names the entry, and nothing left behind: no file, no
folder, no link, inside the target or outside it. Plain files and folders (with or without a unix mode) are
extracted, so that refusing everything cannot pass.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

from embed.sources.datasets import DatasetError

FOLDER = "tiny-imagenet-200"
GOOD = f"{FOLDER}/val/images/a.txt"


def extract(archive: Path, out: Path, max_bytes: int = 1 << 30):
    from embed.sources.dataset_download import extract_archive

    return extract_archive(archive, out, FOLDER, max_bytes=max_bytes, max_entries=100, progress=False)


def assert_nothing_left(tmp_path: Path, out: Path, archive: Path) -> None:
    assert [p for p in out.rglob("*")] == [], f"left behind in {out}: {list(out.rglob('*'))}"
    leftovers = [
        Path(d) / n
        for d, dirs, files in os.walk(tmp_path)
        for n in dirs + files
        if Path(d, n) not in (out, archive) and not Path(d, n).is_relative_to(out)
    ]
    assert leftovers == [], f"written outside the target: {leftovers}"


# zip -------------------------------------------------------------------------------------------------------


def _zip(path: Path, entries) -> Path:
    """entries: (name, data, unix mode or None); None: no unix mode at all (an archive made on Windows)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(GOOD, b"good")
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is None:
                info.create_system, info.external_attr = 0, 0
            else:
                info.create_system, info.external_attr = 3, mode << 16
            z.writestr(info, data)
    return path


ZIP_REFUSED = {
    "symlink": ([(f"{FOLDER}/val/images/passwd.txt", b"/etc/passwd", stat.S_IFLNK | 0o777)], "links"),
    "symlink to a folder": ([(f"{FOLDER}/val/up", b"../..", stat.S_IFLNK | 0o777)], "links"),
    "character device": ([(f"{FOLDER}/val/tty", b"", stat.S_IFCHR | 0o666)], "special files"),
    "block device": ([(f"{FOLDER}/val/sda", b"", stat.S_IFBLK | 0o660)], "special files"),
    "fifo": ([(f"{FOLDER}/val/pipe", b"", stat.S_IFIFO | 0o644)], "special files"),
    "socket": ([(f"{FOLDER}/val/sock", b"", stat.S_IFSOCK | 0o644)], "special files"),
    "absolute": ([("/ABS/escaped.txt", b"x", stat.S_IFREG | 0o644)], "absolute path"),
    "drive letter": ([("C:/escaped.txt", b"x", None)], "absolute path"),
    "backslash absolute": ([("\\escaped.txt", b"x", None)], "absolute path"),
    "dotdot": ([(f"{FOLDER}/../../escaped.txt", b"x", stat.S_IFREG | 0o644)], "outside the target folder"),
    "backslash dotdot": ([(f"{FOLDER}\\..\\..\\escaped.txt", b"x", None)], "outside the target folder"),
    "outside the folder": ([("elsewhere/escaped.txt", b"x", stat.S_IFREG | 0o644)], f"not under {FOLDER}/"),
    "duplicate name": ([(GOOD, b"second", stat.S_IFREG | 0o644)], "appears twice"),
    "file then folder of that name": ([(GOOD + "/", b"", stat.S_IFDIR | 0o755)], "appears twice"),
}


@pytest.mark.parametrize("case", list(ZIP_REFUSED))
def test_zip_entry_is_refused_and_nothing_is_left(case, tmp_path):
    entries, why = ZIP_REFUSED[case]
    archive = tmp_path / "bad.zip"
    with pytest.warns(UserWarning) if case == "duplicate name" else contextlib.nullcontext():  # "Duplicate name"
        _zip(archive, [(n.replace("/ABS", str(tmp_path)), d, m) for n, d, m in entries])
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=why) as refused:
        extract(archive, out)
    assert "refusing entry" in str(refused.value)
    assert_nothing_left(tmp_path, out, archive)


def test_zip_plain_files_and_folders_are_extracted(tmp_path):
    archive = _zip(
        tmp_path / "good.zip",
        [
            (f"{FOLDER}/val/images/b.txt", b"regular", stat.S_IFREG | 0o644),
            (f"{FOLDER}/val/images/c.txt", b"no unix mode", None),
            (f"{FOLDER}/val/empty/", b"", stat.S_IFDIR | 0o755),
        ],
    )
    root = extract(archive, tmp_path / "out")
    assert (root / "val/images/a.txt").read_bytes() == b"good"
    assert (root / "val/images/b.txt").read_bytes() == b"regular"
    assert (root / "val/images/c.txt").read_bytes() == b"no unix mode"
    assert (root / "val/empty").is_dir()


# tar -------------------------------------------------------------------------------------------------------


class Entry(NamedTuple):
    name: str
    kind: bytes = tarfile.REGTYPE
    data: Optional[bytes] = None
    link: str = ""


def _tar(path: Path, entries, gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as t:
        for e in [Entry(GOOD, data=b"good")] + list(entries):
            info = tarfile.TarInfo(e.name)
            info.type, info.linkname = e.kind, e.link
            info.size = len(e.data or b"")
            t.addfile(info, io.BytesIO(e.data) if e.data is not None else None)
    return path


TAR_REFUSED = {
    "symlink": ([Entry(f"{FOLDER}/val/images/passwd.txt", tarfile.SYMTYPE, link="/etc/passwd")], "links"),
    "symlink to a folder": ([Entry(f"{FOLDER}/val/up", tarfile.SYMTYPE, link="../..")], "links"),
    "hard link": ([Entry(f"{FOLDER}/val/images/hard.txt", tarfile.LNKTYPE, link=GOOD)], "links"),
    "hard link outside": ([Entry(f"{FOLDER}/val/images/shadow", tarfile.LNKTYPE, link="/etc/shadow")], "links"),
    "character device": ([Entry(f"{FOLDER}/val/tty", tarfile.CHRTYPE)], "special files"),
    "block device": ([Entry(f"{FOLDER}/val/sda", tarfile.BLKTYPE)], "special files"),
    "fifo": ([Entry(f"{FOLDER}/val/pipe", tarfile.FIFOTYPE)], "special files"),
    "absolute": ([Entry("/ABS/escaped.txt", data=b"x")], "absolute path"),
    "dotdot": ([Entry(f"{FOLDER}/../../escaped.txt", data=b"x")], "outside the target folder"),
    "long name with dotdot": (
        [Entry(f"{FOLDER}/{'d' * 120}/../../../escaped.txt", data=b"x")],
        "outside the target folder",
    ),
    "outside the folder": ([Entry("elsewhere/escaped.txt", data=b"x")], f"not under {FOLDER}/"),
    "duplicate name": ([Entry(GOOD, data=b"second")], "appears twice"),
    "duplicate through ./": ([Entry(f"{FOLDER}/val/./images/a.txt", data=b"second")], "appears twice"),
    "file then folder of that name": ([Entry(GOOD, tarfile.DIRTYPE)], "appears twice"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tgz"])
@pytest.mark.parametrize("case", list(TAR_REFUSED))
def test_tar_entry_is_refused_and_nothing_is_left(case, gz, tmp_path):
    entries, why = TAR_REFUSED[case]
    entries = [e._replace(name=e.name.replace("/ABS", str(tmp_path))) for e in entries]
    archive = _tar(tmp_path / ("bad.tgz" if gz else "bad.tar"), entries, gz)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=why) as refused:
        extract(archive, out)
    assert "refusing entry" in str(refused.value)
    assert_nothing_left(tmp_path, out, archive)


def test_tar_regular_contiguous_and_folder_entries_are_extracted(tmp_path):
    archive = _tar(
        tmp_path / "good.tar",
        [
            Entry(f"{FOLDER}/val/images/b.txt", tarfile.AREGTYPE, b"old-style regular"),
            Entry(f"{FOLDER}/val/images/c.txt", tarfile.CONTTYPE, b"contiguous"),
            Entry(f"{FOLDER}/val/empty", tarfile.DIRTYPE),
            Entry(f"{FOLDER}/val/{'n' * 120}.txt", data=b"long name"),
        ],
    )
    root = extract(archive, tmp_path / "out")
    assert (root / "val/images/a.txt").read_bytes() == b"good"
    assert (root / "val/images/b.txt").read_bytes() == b"old-style regular"
    assert (root / "val/images/c.txt").read_bytes() == b"contiguous"
    assert (root / "val/empty").is_dir()
    assert (root / f"val/{'n' * 120}.txt").read_bytes() == b"long name"


# headers that understate sizes --------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 12  # 3,072 bytes, not all zeros
DECLARED = 100


def _lying_tar(path: Path, gz: bool) -> Path:
    """A good entry, then one whose header says 100 bytes while 3,072 follow, then a third entry."""
    blocks = io.BytesIO()
    for name, data, declared in (
        (GOOD, b"good", 4),
        (f"{FOLDER}/val/images/big.bin", PAYLOAD, DECLARED),
        (f"{FOLDER}/val/images/after.txt", b"after", 5),
    ):
        info = tarfile.TarInfo(name)
        info.size = declared
        blocks.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        blocks.write(data + bytes(-len(data) % tarfile.BLOCKSIZE))
    blocks.write(bytes(2 * tarfile.BLOCKSIZE))
    raw = blocks.getvalue()
    if gz:
        import gzip

        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tgz"])
def test_tar_header_understating_its_size_is_refused(gz, tmp_path):
    archive = _lying_tar(tmp_path / ("lies.tgz" if gz else "lies.tar"), gz)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="belongs to no entry"):
        extract(archive, out)
    assert_nothing_left(tmp_path, out, archive)


def _patch_zip_sizes(raw: bytes, name: str, size: int, crc: int = None) -> bytes:
    """Rewrite the uncompressed size (and optionally the CRC) of ``name`` in its local and central headers."""
    data = bytearray(raw)
    encoded = name.encode()
    local = data.find(b"PK\x03\x04")
    while True:  # the local header of ``name``
        n = struct.unpack_from("<H", data, local + 26)[0]
        if bytes(data[local + 30 : local + 30 + n]) == encoded:
            break
        local = data.find(b"PK\x03\x04", local + 4)
    struct.pack_into("<I", data, local + 22, size)
    central = data.find(b"PK\x01\x02")
    while True:
        n = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + n]) == encoded:
            break
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, size)
    if crc is not None:
        struct.pack_into("<I", data, local + 14, crc)
        struct.pack_into("<I", data, central + 16, crc)
    return bytes(data)


@pytest.mark.parametrize(
    "compression,crc_of",
    [(zipfile.ZIP_DEFLATED, "all"), (zipfile.ZIP_STORED, "all"), (zipfile.ZIP_STORED, "declared part")],
    ids=["deflated", "stored", "stored, crc forged for the declared part"],
)
def test_zip_header_understating_its_size_is_refused(compression, crc_of, tmp_path):
    name = f"{FOLDER}/val/images/big.bin"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(GOOD, b"good")
        z.writestr(zipfile.ZipInfo(name), PAYLOAD, compress_type=compression)
    crc = zlib.crc32(PAYLOAD[:DECLARED]) if crc_of == "declared part" else None
    archive = tmp_path / "lies.zip"
    archive.write_bytes(_patch_zip_sizes(buf.getvalue(), name, DECLARED, crc))
    with zipfile.ZipFile(archive) as z:
        assert z.getinfo(name).file_size == DECLARED, "the crafted header declares 100 bytes"
    out = tmp_path / "out"
    with pytest.raises(DatasetError):
        extract(archive, out)
    assert_nothing_left(tmp_path, out, archive)


# the cap on what is actually written ----------------------------------------------------------------------


def _zeros_zip(path: Path, sizes) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i, size in enumerate(sizes):
            z.writestr(f"{FOLDER}/val/zeros{i}.bin", bytes(size))
    return path


@pytest.fixture
def declared_sizes_understated(monkeypatch):
    """Entries listed with size 0: what a header that lies looks like to the declared-size check.

    Python's zipfile and tarfile stop reading an entry at its declared size, so with them the stream cannot
    outgrow the declarations; the cap on written bytes is for readers that do not. Here the listing lies and
    the reader still reads every real byte."""
    from embed.sources import dataset_download as dd

    real = dd.ArchiveReader.list

    def understated(self):
        for m in real(self):
            yield dd._Member(m.name, 0, m.is_dir, m.is_file, m.handle)

    monkeypatch.setattr(dd.ArchiveReader, "list", understated)


CAP = 1 << 20


def test_streamed_cap_refuses_what_the_declared_sizes_hid(declared_sizes_understated, tmp_path):
    archive = _zeros_zip(tmp_path / "bomb.zip", [400 << 10] * 3)  # 1.2 MiB written, 0 declared
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="expands beyond"):
        extract(archive, out, max_bytes=CAP)
    assert_nothing_left(tmp_path, out, archive)


def test_streamed_cap_counts_every_byte_across_entries_up_to_the_cap(declared_sizes_understated, tmp_path):
    exactly = _zeros_zip(tmp_path / "exact.zip", [CAP // 2, CAP // 2])  # the cap itself is allowed
    root = extract(exactly, tmp_path / "out", max_bytes=CAP)
    assert sum(p.stat().st_size for p in root.rglob("*.bin")) == CAP
    one_more = _zeros_zip(tmp_path / "over.zip", [CAP // 2, CAP // 2 + 1])
    with pytest.raises(DatasetError, match="expands beyond"):
        extract(one_more, tmp_path / "out2", max_bytes=CAP)
    assert list((tmp_path / "out2").rglob("*")) == []
