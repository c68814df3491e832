"""``python -m embed check``: are a model's weights real? Its own ImageNet classifier on labelled images.

Real ImageNet weights classify images of ImageNet classes far above chance (effnet-lite0: about 0.29
top-1 on Tiny-ImageNet val, 64 px images upsampled); random or wrongly mapped weights score about
1/1000. Images count only when their class is an ImageNet-1k synset (Tiny-ImageNet and Imagenette
classes are); the result is saved as ``check.json`` beside the model's embeddings for the report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

import torch

from embed.common.identity import EmbeddingKey
from embed.common.settings import RetrievalSettings
from embed.extraction.shards import atomic_write_bytes
from embed.sources.datasets import DatasetError, load_split

log = logging.getLogger(__name__)

CHECK_FILE = "check.json"


@dataclass
class AccuracyCheckConfig:
    model: str
    split: str
    data_root: Path
    limit: Optional[int] = None
    checkpoint: Optional[Path] = None
    random_init: bool = False
    batch_size: int = 32
    workers: Optional[int] = None
    device: str = "auto"
    progress: bool = True
    settings: Optional[RetrievalSettings] = None  # the entry point's, for the weights (None: load_model's fallback)


@dataclass
class AccuracyResult:
    model: str
    dataset: str
    split: str
    n: int  # images classified (ImageNet classes, readable)
    top1: float
    top5: float
    weights_source: str
    weights_fingerprint: str
    timm_name: str
    data_root: str
    not_imagenet: int  # images skipped: their class is no ImageNet-1k synset
    unreadable: int  # images skipped: could not be decoded
    seconds: float


@lru_cache(maxsize=1)
def imagenet_index() -> Dict[str, int]:
    """ImageNet-1k synset -> classifier output index (timm's ImageNetInfo order = the standard one)."""
    from timm.data import ImageNetInfo

    return {synset: i for i, synset in enumerate(ImageNetInfo().label_names())}


def measure_accuracy(cfg: AccuracyCheckConfig) -> AccuracyResult:
    from tqdm import tqdm

    from embed.extraction.embedder import default_workers, resolve_device
    from embed.extraction.reader import ImageReader
    from embed.models.registry import load_model
    from embed.sources.imaging import MAX_IMAGE_PIXELS

    images = load_split(cfg.data_root, cfg.split, cfg.limit)
    index = imagenet_index()
    positions = [r.position for r in images.records if r.class_id in index]
    if not positions:
        raise DatasetError(
            f"no image of {images.split_dir} has an ImageNet-1k synset as its class (e.g. n01440764): "
            f"the classifier check needs ImageNet classes (Tiny-ImageNet, Imagenette, ImageNet)"
        )
    labels = torch.tensor([index[r.class_id] for r in images.records])
    loaded = load_model(
        cfg.model, checkpoint=cfg.checkpoint, random_init=cfg.random_init, with_head=True, settings=cfg.settings
    )
    device = resolve_device(cfg.device)
    model = loaded.model.to(device)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    reader = ImageReader(images, loaded.transform, device, "workers", cfg.batch_size, workers, MAX_IMAGE_PIXELS)
    top1 = top5 = n = unreadable = 0
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(total=len(positions), unit="img", desc=f"check {cfg.model}", disable=not cfg.progress) as bar,
    ):
        for batch_positions, batch, bad in reader.batches(positions):
            unreadable += len(bad)
            if batch is not None:
                logits = model(batch.to(device))
                truth = labels[torch.from_numpy(batch_positions)].to(device)
                best5 = logits.topk(5, dim=1).indices
                top1 += int((best5[:, 0] == truth).sum())
                top5 += int((best5 == truth[:, None]).any(dim=1).sum())
                n += len(batch_positions)
            bar.update(len(batch_positions) + len(bad))
    if n == 0:
        raise DatasetError(f"none of the {len(positions)} images in {images.split_dir} could be read")
    return AccuracyResult(
        model=cfg.model,
        dataset=images.dataset_name,
        split=images.split,
        n=n,
        top1=top1 / n,
        top5=top5 / n,
        weights_source=loaded.weights.source,
        weights_fingerprint=loaded.weights.fingerprint,
        timm_name=loaded.spec.timm_name,
        data_root=str(images.data_root),
        not_imagenet=len(images) - len(positions),
        unreadable=unreadable,
        seconds=round(time.perf_counter() - start, 2),
    )


def accuracy_path(out: Path, model: str, dataset: str, split: str) -> Path:
    """Where a check's result lives: beside the model's embeddings manifest for the same data."""
    return EmbeddingKey(model, dataset, split).folder(out) / CHECK_FILE


def save_accuracy(result: AccuracyResult, out: Path) -> Path:
    path = accuracy_path(out, result.model, result.dataset, result.split)
    atomic_write_bytes(path, json.dumps(asdict(result), indent=1).encode())
    return path
