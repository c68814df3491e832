"""What the CPU suite (benchmarks/run.py) and the GPU benchmark (benchmarks/gpu.py) both time with: seeded
random models, the forward-pass timer, the precisions compared, and the ImageNet-sized copy of Tiny-ImageNet."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

import torch

from benchmarks import REPO


def _tiny_imagenet() -> Path:
    """$TINY_IMAGENET, else the shared copy beside the checkout, else one inside it (the device machine's copy)."""
    if os.environ.get("TINY_IMAGENET"):
        return Path(os.environ["TINY_IMAGENET"])
    beside, inside = (base / "shared" / "datasets" / "tiny-imagenet-200" for base in (REPO.parent, REPO))
    return inside if not beside.is_dir() and inside.is_dir() else beside


TINY = _tiny_imagenet()

# name -> autocast dtype (None: plain fp32), as embed.extraction.embedder.resolve_precision gives them
PRECISIONS: Dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16}


def seeded_model(name: str, fused: bool = True, **kwargs):
    """A registry model (or any timm name, e.g. resnet50d; ``kwargs`` go to timm) with seeded random weights:
    for timing only."""
    import timm
    from timm.utils import reparameterize_model

    from embed.models.catalog import REGISTRY, get_spec

    spec = REGISTRY.get(name) or get_spec(f"timm:{name}")
    torch.manual_seed(0)
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **kwargs).eval()
    if name == "gresnet" and fused:
        model = reparameterize_model(model)
    return model


def time_forward(
    model,
    batch: int,
    size: int,
    device: torch.device,
    precision: Optional[torch.dtype],
    channels_last: bool,
    compile: bool,
    min_seconds: float,
    warmup: int = 2,
) -> float:
    from embed.extraction.embedder import autocast_to, images_per_second

    model = model.to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(model) if compile else model

    def step():
        with (
            torch.inference_mode(),
            autocast_to(device, precision),
        ):
            return fn(x)

    return images_per_second(step, batch, device, warmup=warmup, min_seconds=min_seconds)


def imagenet_sized_copy(tiny: Path, n: int, root: Path) -> Path:
    """The first ``n`` val images of the Tiny-ImageNet at ``tiny`` re-encoded at 500x375 (ImageNet's typical size), as an ImageFolder.

    Tiny-ImageNet's 64 px JPEGs cost almost nothing to decode; real ImageNet files take ~30x longer,
    and that is the case that decides where decoding should happen.
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from embed.sources.datasets import load_split

    images = load_split(tiny, "val").limited(n)

    def one(record):
        out = root / "val" / record.class_id / Path(record.relpath).name
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(images.path(record)) as im:
            im.convert("RGB").resize((500, 375), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, images.records))
    return root
