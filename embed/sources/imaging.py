"""Opening untrusted image files safely: one RGB image out, or a BadImage with the reason.

Used for dataset files and for app uploads alike. The pixel count is checked from the header
before any decoding, so a decompression bomb costs nothing; truncated files fail instead of being
padded with grey; odd modes (CMYK, 16-bit, palette, alpha) become proper RGB; EXIF orientation
is applied so that a rotated phone photo is embedded upright.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

# The one pixel limit of this tool, for dataset files, query files and app uploads alike: an 8,000 x 6,000
# photo passes, a decompression bomb (a small file declaring 40,000 x 40,000 pixels) does not, and a decoded
# image stays under 150 MB.
MAX_IMAGE_PIXELS = 50_000_000
# Pillow's own guard would answer first above twice its 89 MP default, in its own words and with its own
# limit; the check in load_rgb, made from the header before any decoding, replaces it.
Image.MAX_IMAGE_PIXELS = None


class BadImage(ValueError):
    """A file that cannot be turned into an RGB image; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def too_many_pixels(width: int, height: int, limit: int = MAX_IMAGE_PIXELS) -> str:
    """The one message for an image over the pixel limit."""
    return f"too many pixels: {width:,} x {height:,} = {width * height:,}; the limit is {limit:,}"


def load_rgb(source: Union[str, os.PathLike, bytes, BinaryIO], max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``source`` (a path, bytes or a binary file) into an upright RGB image.

    Raises BadImage for empty, non-image, truncated, oversized or otherwise undecodable input.
    """
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise BadImage("empty file")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            if os.path.getsize(source) == 0:
                raise BadImage("empty file")
        except OSError as e:
            raise BadImage(f"unreadable: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            # in case a caller restored Pillow's guard: its warning is not the decision, the check below is
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(source)
            width, height = im.size
            if width * height > max_pixels:
                raise BadImage(too_many_pixels(width, height, max_pixels))
            if width == 0 or height == 0:
                raise BadImage("zero-sized image")
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError) as e:
        # PIL signals truncated and corrupt data with a zoo of exception types
        raise BadImage(f"corrupt image: {e}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: scale by the format's range, not by clipping at 255 (PIL's convert does that)
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # transparent pixels often hold garbage colours: composite on white, as a viewer shows them
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def read_bytes_capped(path: Union[str, Path], max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` from a file, refusing larger ones without reading them."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise BadImage(f"file too large ({size:,} bytes > {max_bytes:,})")
    with open(path, "rb") as fh:
        return fh.read(max_bytes + 1)
