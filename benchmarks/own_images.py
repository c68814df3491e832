"""Folders of images as people have them, made from any source images: mixed sizes (thumbnails to large), formats
and modes, awkward names, links and hidden files. The tests make small ones; the figures of a 1,000-image
unlabelled run (docs/own-images.md) come from ``python -m benchmarks.own_images``:

    python -m benchmarks.own_images --source ../shared/datasets/tiny-imagenet-200/val/images --out /tmp/own-images --n 1200
"""

from __future__ import annotations

import argparse
import io
import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("gif", "GIF"), ("bmp", "BMP"))


def random_size(rng: np.random.Generator, max_side: int = 1200) -> int:
    """A longest side: a third thumbnails (32-96 px), a third medium (128-512), a third large (640-max_side); the
    bands end at ``max_side``."""
    band = rng.integers(3)
    low, high = ((32, 96), (128, min(512, max_side)), (min(640, max_side), max_side))[band]
    return int(rng.integers(low, high + 1))


def save_as(im: Image.Image, path: Path, fmt: str, rng: np.random.Generator) -> None:
    if fmt == "GIF":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)
    elif fmt == "PNG" and rng.random() < 0.3:
        im = im.convert("RGBA")
        alpha = np.full(im.size[::-1], 255, np.uint8)
        alpha[: alpha.shape[0] // 4] = 0  # a transparent band: composited on white by the loader
        im.putalpha(Image.fromarray(alpha))
    elif fmt == "JPEG" and rng.random() < 0.2:
        im = im.convert("CMYK")
    im.save(path, fmt, **({"quality": int(rng.integers(60, 96))} if fmt in ("JPEG", "WEBP") else {}))


def mixed_folder(sources: Sequence[Path], out: Path, n: int, seed: int = 0, max_side: int = 1200) -> List[Path]:
    """``n`` images from ``sources`` (cycled), each resized to a random size and aspect, written in a random format
    into a flat folder ``out``; returns the written paths."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in tqdm(range(n), desc=f"writing {out}", unit="img"):
        src = Image.open(sources[i % len(sources)]).convert("RGB")
        side = random_size(rng, max_side)
        aspect = float(rng.uniform(0.6, 1.6))
        size = (side, max(8, int(side / aspect))) if aspect >= 1 else (max(8, int(side * aspect)), side)
        ext, fmt = FORMATS[int(rng.integers(len(FORMATS)))]
        path = out / f"photo {i:05d}.{ext}"
        save_as(src.resize(size, Image.Resampling.BICUBIC), path, fmt, rng)
        written.append(path)
    return written


def awkward_files(folder: Path, seed: int = 0) -> Dict[str, str]:
    """Real-world files in ``folder`` (it may already hold images): what each is expected to become, either
    ``"embedded"`` or the reason it is left out or refused. Every kind the safe loader handles or refuses, in a tree
    with links, hidden files and names with spaces and non-ASCII characters."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    rgb = Image.fromarray(base)
    expected: Dict[str, str] = {}

    def write(rel: str, data: bytes, outcome: str = "embedded") -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = outcome

    def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(56)[None, :] < 28, 0, 255).astype(np.uint8).repeat(40, 0)))
    write("alpha.png", encoded(rgba, "PNG"))
    write("palette.gif", encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"))
    write("cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW: upright the image is portrait
    write("phone/rotated.jpg", encoded(rgb, "JPEG", exif=exif.tobytes()))
    deep = Image.fromarray((np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16))
    write("scans/grey 16-bit.png", encoded(deep, "PNG"))
    write("thumbs/tiny thumb.jpg", encoded(rgb.resize((12, 9)), "JPEG"))
    write("large/wide.jpg", encoded(rgb.resize((1600, 1200)), "JPEG", quality=80))
    write("café/été 2024 — plage.webp", encoded(rgb, "WEBP"))
    write("spaced name/a photo.bmp", encoded(rgb, "BMP"))
    write(".hidden.jpg", encoded(rgb, "JPEG"), "hidden file")
    write(".cache/x.jpg", encoded(rgb, "JPEG"))
    del expected[".cache/x.jpg"]
    expected[".cache/"] = "hidden folder"  # the folder is left out, and said so, not each file in it
    write("notes.txt", b"not an image", "not an image file name")
    write("broken.jpg", encoded(rgb, "JPEG")[:200], "corrupt image")
    write("empty.png", b"", "empty file")
    outside = folder.parent / f"{folder.name}-linked"
    outside.mkdir(exist_ok=True)
    (outside / "elsewhere.png").write_bytes(encoded(rgb, "PNG"))
    os.symlink(outside / "elsewhere.png", folder / "link to file.png")
    expected["link to file.png"] = "embedded"
    os.symlink(outside, folder / "linked folder")
    expected["linked folder/"] = "link to a folder"
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")
    expected["dangling.jpg"] = "broken link"
    return expected


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, required=True, help="folder of source images (read in sorted order)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (a flat folder of mixed images)")
    p.add_argument("--n", type=int, default=1200, help="images to write (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=1200, help="largest longest side in pixels (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from embed.sources.imaging import has_image_extension

    sources = sorted(q for q in args.source.iterdir() if has_image_extension(q.name))
    if not sources:
        p.error(f"no images in {args.source}")
    written = mixed_folder(sources, args.out, args.n, args.seed, args.max_side)
    sizes = [os.path.getsize(q) for q in written]
    log.info("wrote %d images (%.1f MB) to %s", len(written), sum(sizes) / 1e6, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
