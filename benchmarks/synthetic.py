"""Collections of synthetic vectors for benchmarks and tests: metadata that says plainly what they are."""

from __future__ import annotations

from typing import Optional

from embed.common.identity import VectorSetIdentity
from indexer.milvus_store import CollectionMeta


def synthetic_meta(
    model: str,
    dim: int,
    dataset: str,
    data_root: str,
    split: str = "val",
    *,
    timm_name: Optional[str] = None,
    weights_source: str = "random",
    weights_fingerprint: str = "random",
    precision: str = "synthetic",
    transform: str = "synthetic",
    normalized: bool = False,
    rows: int = 0,
    complete: bool = False,
) -> CollectionMeta:
    """Metadata for rows that no model made (random weights unless said otherwise), the data named ``dataset``."""
    identity = VectorSetIdentity(
        model=model,
        timm_name=timm_name or model,
        dim=dim,
        weights_source=weights_source,
        weights_fingerprint=weights_fingerprint,
        dataset=dataset,
        data_fingerprint="synthetic",
        split=split,
        transform=transform,
        decode="workers",
        precision=precision,
        normalized=normalized,
    )
    return CollectionMeta(identity=identity, data_root=data_root, rows=rows, complete=complete)
