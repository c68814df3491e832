"""The reader: image files -> decoded, transformed batches, whichever decode mode is chosen.

JPEG decoding, not the model, usually bounds extraction, so files are read in DataLoader worker
processes and batches reach the GPU from pinned memory. In ``workers`` mode the workers decode,
resize and crop with PIL; in ``device`` mode they only read bytes (and decode on a CPU), and the
batch is decoded and transformed on the model's device (see device_decode.py). Files that cannot be
read are reported per position with a reason, never fatal.
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from embed.extraction.device_decode import DeviceDecoder, Encoded, collate_encoded, load_encoded
from embed.sources.datasets import ImageList
from embed.sources.imaging import BadImage, load_rgb

log = logging.getLogger(__name__)

# (canonical positions, model-ready batch or None when every file failed, [(position, reason)])
Batch = Tuple[np.ndarray, Optional[torch.Tensor], List[Tuple[int, str]]]


class ImageFileDataset(Dataset):
    """(position, item or None, reason) for each requested canonical position.

    ``load(path, position)`` makes the item: a model-ready tensor, or an ``Encoded`` for device decoding.
    """

    def __init__(self, images: ImageList, positions: Sequence[int], load: Callable):
        self.images = images
        self.positions = list(positions)
        self.load = load

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        pos = self.positions[i]
        try:
            return pos, self.load(self.images.path(self.images.records[pos]), pos), ""
        except BadImage as e:
            return pos, None, e.reason
        except Exception as e:  # a transform failing on a pathological image must not end the run
            return pos, None, f"{type(e).__name__}: {e}"


def load_transformed(path, position: int, transform, max_pixels: int) -> torch.Tensor:
    return transform(load_rgb(path, max_pixels))


def ignore_interrupts(_worker_id: int) -> None:
    """In a decoding worker: Ctrl-C reaches the whole process group, and a worker that dies of it mid-transfer
    prints a multiprocessing traceback; the main process alone handles it and stops the workers.

    A batch the main process stopped receiving when interrupted breaks the connection it came by: the worker's
    multiprocessing.resource_sharer thread would print that (ConnectionResetError) as a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    default_hook = sys.excepthook

    def quiet_lost_receiver(kind, value, traceback) -> None:
        if not issubclass(kind, (ConnectionResetError, BrokenPipeError)):
            default_hook(kind, value, traceback)

    sys.excepthook = quiet_lost_receiver


def collate_skipping(items):
    good = [(p, x) for p, x, _ in items if x is not None]
    bad = [(p, reason) for p, x, reason in items if x is None]
    positions = torch.tensor([p for p, _ in good], dtype=torch.int64)
    batch = torch.stack([x for _, x in good]) if good else None
    return positions, batch, bad


class ImageReader:
    """Batches of model input for the given positions of ``images``, decoded as ``decode`` says."""

    def __init__(
        self,
        images: ImageList,
        transform,
        device: torch.device,
        decode: str,
        batch_size: int,
        workers: int,
        max_pixels: int,
    ):
        self.images = images
        self.transform = transform
        self.device = device
        self.decode = decode
        self.batch_size = batch_size
        self.workers = workers
        self.max_pixels = max_pixels
        self.decoder = DeviceDecoder(transform, device) if decode == "device" else None

    def describe(self) -> str:
        where = (
            "PIL in the workers"
            if self.decoder is None
            else ("nvJPEG + tensor transforms on " if self.device.type == "cuda" else "tensor transforms on ")
            + str(self.device)
        )
        return f"decode={self.decode} ({where})"

    def _loader(self, positions: Sequence[int]) -> DataLoader:
        load: Callable[..., object]
        if self.decoder is None:
            load = partial(load_transformed, transform=self.transform, max_pixels=self.max_pixels)
            collate = collate_skipping
        else:
            load = partial(load_encoded, max_pixels=self.max_pixels, decode_jpegs_here=self.device.type != "cuda")
            collate = collate_encoded
        return DataLoader(
            ImageFileDataset(self.images, positions, load),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self.workers > 0 else None,
            timeout=600 if self.workers > 0 else 0,  # a wedged worker ends the run with an error, not a hang
            worker_init_fn=ignore_interrupts if self.workers > 0 else None,
        )

    def batches(self, positions: Sequence[int]) -> Iterator[Batch]:
        for loaded in self._loader(positions):
            pos, batch, bad = loaded if self.decoder is None else self.decoder(*loaded)
            yield pos.numpy(), batch, bad


def transform_pil_images(images: Sequence, transform, device: torch.device, decode: str) -> torch.Tensor:
    """PIL images (queries) as one model-ready batch, with the same resampling as ``decode``'s extraction."""
    if decode == "device":
        items = [
            Encoded(i, None, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
            for i, im in enumerate(images)
        ]
        _, batch, _ = DeviceDecoder(transform, device)(items, [])
        return batch
    return torch.stack([transform(im) for im in images])
