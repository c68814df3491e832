"""The test network and its extraction settings: one definition for every test that embeds or builds."""

from __future__ import annotations

from pathlib import Path

from embed.extraction.extract import ExtractConfig

MODEL = "timm:test_resnet"  # tiny timm test net with seeded random weights: fast on CPU, the same vectors every run


def extract_config(root: Path, out: Path, **kw) -> ExtractConfig:
    """``MODEL`` on ``root``'s val split into ``out``: one process, small batches and shards, no progress bars;
    ``kw`` overrides any field."""
    base = dict(
        model=MODEL,
        split="val",
        data_root=root,
        out=out,
        random_init=True,
        workers=0,
        batch_size=4,
        shard_size=5,
        progress=False,
    )
    return ExtractConfig(**{**base, **kw})
