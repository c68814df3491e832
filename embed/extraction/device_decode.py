"""Decoding on the model's device: workers only read files, the device decodes, resizes and crops.

On a GPU machine the CPU JPEG decoder is the ceiling of extraction (a few thousand images/s even
with every core), far below what the model can take. With ``--decode device`` the DataLoader
workers only read the encoded bytes and the header; each batch of JPEGs is then decoded in one
call (``torchvision.io.decode_jpeg(list, device="cuda")``, i.e. nvJPEG), and the model's own eval
transform (resize, centre crop, normalise) runs as tensor ops on the device. When the device is the
CPU, the workers decode the JPEGs themselves (so decoding still scales with them) and only the
resize, crop and normalisation move to batched tensor ops.

Anything that is not a plain RGB or grey JPEG (PNG, WebP, CMYK JPEG, ...) is decoded by the worker
with the same safe loader as the default path, so both paths accept and refuse the same files.
Vectors differ slightly from the default path's (tensor bicubic is not PIL's bicubic), which is why
the decode mode is part of the embeddings' identity.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from embed.sources.datasets import ImageList
from embed.sources.imaging import BadImage, load_rgb

DECODE_MODES = ("auto", "workers", "device")

# EXIF orientation tag -> the tensor operation PIL's exif_transpose performs (CHW tensors)
_ORIENT: dict = {
    2: lambda x: x.flip(-1),
    3: lambda x: x.flip((-2, -1)),
    4: lambda x: x.flip(-2),
    5: lambda x: x.transpose(-2, -1),
    6: lambda x: x.transpose(-2, -1).flip(-1),
    7: lambda x: x.transpose(-2, -1).flip((-2, -1)),
    8: lambda x: x.transpose(-2, -1).flip(-2),
}


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A CHW image turned as its EXIF orientation says (1 or unknown: unchanged)."""
    turn = _ORIENT.get(orientation)
    return turn(image) if turn else image


def resolve_decode(name: str, device: torch.device, upsampling: bool = False) -> str:
    """``auto`` picks the mode measured fastest for this device and kind of file (benchmarks/README.md).

    On a CPU, small files that the transform enlarges (Tiny-ImageNet's 64 px) go faster with the
    batched tensor resize (``device``); ImageNet-sized files go a little faster with PIL in the
    workers. On a GPU it stays ``workers`` until the nvJPEG path has been measured on one.
    """
    if name not in DECODE_MODES:
        raise ValueError(f"decode mode {name!r}: choose one of {', '.join(DECODE_MODES)}")
    if name == "auto":
        return "device" if device.type == "cpu" and upsampling else "workers"
    return name


def transform_upsamples(images: ImageList, transform, sample: int = 16) -> bool:
    """Whether the first images' shorter side (median, read from headers) is below the transform's resize."""
    target = next((t.size for t in getattr(transform, "transforms", []) if isinstance(t, T.Resize)), None)
    if target is None:
        return False
    target = min(target) if isinstance(target, (tuple, list)) else target
    sides = []
    for record in images.records[:sample]:
        try:
            with Image.open(images.path(record)) as im:
                sides.append(min(im.size))
        except Exception:
            continue  # unreadable files are reported by the extraction itself
    return bool(sides) and float(np.median(sides)) < target


@dataclass
class Encoded:
    """One image as a worker hands it over: JPEG bytes for the device, or pixels it decoded itself."""

    position: int
    jpeg: Optional[torch.Tensor]  # 1-d uint8, the file's bytes
    pixels: Optional[torch.Tensor]  # uint8 CHW RGB
    orientation: int = 1  # EXIF orientation still to apply (JPEG only)


def read_encoded(path, position: int, max_pixels: int) -> Encoded:
    """Read a file for device decoding; raises BadImage like ``load_rgb``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or e}") from None
    try:  # an empty or non-image file fails here and gets its reason from load_rgb below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                plain_jpeg = im.format == "JPEG" and im.mode in ("RGB", "L")
                width, height = im.size
                orientation = int(im.getexif().get(0x0112, 1)) if plain_jpeg else 1
    except Exception:
        plain_jpeg = False  # load_rgb below gives the precise reason
    if plain_jpeg and 0 < width * height <= max_pixels:
        return Encoded(
            position,
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            None,
            orientation if orientation in _ORIENT else 1,
        )
    image = load_rgb(data, max_pixels)
    return Encoded(position, None, torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous())


def decode_in_worker(enc: Encoded) -> Encoded:
    """Decode a JPEG item to pixels on the CPU (the model's device is the CPU: decoding scales with workers)."""
    assert enc.jpeg is not None, "only JPEG items are decoded here"
    img, reason = decode_jpegs([enc.jpeg], torch.device("cpu"))[0]
    if img is None:
        raise BadImage(reason)
    return Encoded(enc.position, None, upright(img, enc.orientation).contiguous())


def load_encoded(path, position: int, max_pixels: int, decode_jpegs_here: bool) -> Encoded:
    """What a worker hands over in ``--decode device`` mode; ``decode_jpegs_here`` when the device is the CPU."""
    enc = read_encoded(path, position, max_pixels)
    return decode_in_worker(enc) if decode_jpegs_here and enc.jpeg is not None else enc


def collate_encoded(items):
    """(position, Encoded or None, reason) items -> (Encoded list, [(position, reason)])."""
    good = [enc for _, enc, _ in items if enc is not None]
    bad = [(pos, reason) for pos, enc, reason in items if enc is None]
    return good, bad


def _resize_clamped(x: torch.Tensor, size, interpolation, max_size) -> torch.Tensor:
    # PIL resizes uint8 and saturates; clamping keeps bicubic overshoot out of the same range
    return TF.resize(x, size, interpolation, max_size, antialias=True).clamp_(0, 1)


def tensor_transform(transform: T.Compose) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's PIL eval transform as batched tensor ops on float images in [0, 1].

    Uses the Compose's own parameters (timm's resolved size, crop and interpolation), so there is no
    second copy of each model's preprocessing to drift out of date.
    """
    steps: List[Callable[[torch.Tensor], torch.Tensor]] = []
    for t in getattr(transform, "transforms", [transform]):
        if isinstance(t, T.Resize):
            size, interp, max_size = t.size, t.interpolation, t.max_size
            steps.append(functools.partial(_resize_clamped, size=size, interpolation=interp, max_size=max_size))
        elif isinstance(t, (T.CenterCrop, T.Normalize)):
            steps.append(t)
        elif type(t).__name__ in ("ToTensor", "MaybeToTensor"):
            continue  # images arrive as float tensors already
        else:
            raise ValueError(f"--decode device cannot run the transform step {t!r} on tensors; use --decode workers")

    def run(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return run


def _reason(error: Exception) -> str:
    # torchvision prefixes its messages with the C++ source location
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return "corrupt image: " + re.sub(r"^.*?\.cpp:\d+,\s*", "", text)


def decode_jpegs(data: List[torch.Tensor], device: torch.device) -> List[Tuple[Optional[torch.Tensor], str]]:
    """Decode JPEG byte tensors to uint8 RGB on ``device`` in one call; (image or None, reason) each."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to torchcodec
        try:
            return [(img, "") for img in decode_jpeg(data, mode=ImageReadMode.RGB, device=device)]
        except RuntimeError:
            pass  # one bad file fails the whole batch call: find it one by one
        out = []
        for d in data:
            try:
                out.append((decode_jpeg(d, mode=ImageReadMode.RGB, device=device), ""))
            except RuntimeError as e:
                out.append((None, _reason(e)))
        return out


class DeviceDecoder:
    """Turns a batch of Encoded items into the model's input batch on ``device``."""

    def __init__(self, transform: T.Compose, device: torch.device):
        self.device = device
        self.transform = tensor_transform(transform)

    def describe(self) -> str:
        return "decode=device (torchvision.io.decode_jpeg + tensor resize/crop)"

    def __call__(self, items: List[Encoded], bad: List[Tuple[int, str]]):
        bad = list(bad)
        jpegs = [(e.position, e.jpeg) for e in items if e.jpeg is not None]
        decoded = dict(zip((p for p, _ in jpegs), decode_jpegs([j for _, j in jpegs], self.device))) if jpegs else {}
        images: List[Tuple[int, torch.Tensor]] = []
        for e in items:
            if e.jpeg is None:
                assert e.pixels is not None, "a worker hands over bytes or pixels"
                images.append((e.position, e.pixels.to(self.device, non_blocking=True)))
                continue
            img, reason = decoded[e.position]
            if img is None:
                bad.append((e.position, reason))
                continue
            images.append((e.position, upright(img, e.orientation)))
        if not images:
            return torch.zeros(0, dtype=torch.int64), None, bad
        # images of one size resize together; the usual dataset has few distinct sizes per batch
        out: List[torch.Tensor] = [torch.empty(0)] * len(images)
        by_size: dict = {}
        for i, (_, img) in enumerate(images):
            by_size.setdefault(tuple(img.shape), []).append(i)
        for idx in by_size.values():
            batch = torch.stack([images[i][1] for i in idx]).float().div_(255)
            for i, row in zip(idx, self.transform(batch)):
                out[i] = row
        positions = torch.tensor([p for p, _ in images], dtype=torch.int64)
        return positions, torch.stack(out), bad
