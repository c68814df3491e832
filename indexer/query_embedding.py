"""Query images embedded exactly as a collection's rows were: same weights, transform, decode, precision, scaling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from embed.common.descriptor import Descriptor
from embed.common.identity import VectorSetIdentity
from embed.common.settings import RetrievalSettings
from embed.common.vectors import l2_normalize
from indexer.build_command import BuildCommand
from indexer.milvus_store import CollectionMeta, StoreError

if TYPE_CHECKING:  # torch loads only when a query is embedded
    from embed.extraction.embedder import Embedder
    from indexer.whitening import Whitening


class QueryEmbedderMismatch(StoreError):
    """The model found now would embed queries differently from the collection's rows."""


class QueryEmbedder:
    """Turns query images into vectors comparable with one collection's rows.

    Built from the collection's identity: the weights it names (checked by fingerprint), its autocast
    precision, its decode mode (PIL or tensor resampling) and its normalisation. A transform that timm now
    builds differently is refused rather than silently compared.
    """

    def __init__(self, meta: CollectionMeta, embedder: "Embedder", whitening: Optional["Whitening"] = None):
        self.meta = meta
        self.embedder = embedder
        self.whitening = whitening

    @classmethod
    def for_collection(
        cls,
        meta: CollectionMeta,
        checkpoint: Optional[Path] = None,
        device: str = "auto",
        settings: Optional[RetrievalSettings] = None,
    ) -> "QueryEmbedder":
        """The collection's model as its identity names it, checked; ``settings``: where weights are cached."""
        from embed.extraction.embedder import build_embedder

        identity = meta.identity
        path = None
        if identity.weights_source == "checkpoint":
            path = checkpoint or (Path(meta.weights_detail) if meta.weights_detail else None)
            if path is None or not Path(path).is_file():
                raise StoreError(f"{identity.model} was indexed with a checkpoint file; pass it with --checkpoint")
        emb = build_embedder(
            identity.model,
            checkpoint=path,
            random_init=identity.is_random,
            device=device,
            precision=identity.precision,
            poolings=[collection_descriptor(meta).pooled],
            settings=settings,
        )
        query = cls(meta, emb, load_collection_whitening(meta))
        query.check()
        return query

    @property
    def identity(self) -> VectorSetIdentity:
        """The identity of the vectors this embedder makes: the loaded model's weights, transform, precision and
        dimension, decoded and scaled as the collection it was set up for; its data fields are that collection's."""
        emb = self.embedder
        return replace(
            self.meta.identity,
            weights_fingerprint=emb.loaded.weights.fingerprint,
            precision=emb.precision_name,
            transform=repr(emb.loaded.transform),
            dim=self.whitening.identity.dim_out if self.whitening else emb.dim,
            whitening=self.whitening.identity.fingerprint if self.whitening else "",
        )

    def serves(self, meta: CollectionMeta) -> bool:
        """Whether this embedder's vectors are interchangeable with the rows ``meta`` describes now."""
        return meta.identity.compare(self.identity).interchangeable

    def check(self, meta: Optional[CollectionMeta] = None) -> None:
        """Refuse when this embedder would embed differently from the rows of ``meta`` (default: the collection it
        was set up for; pass the collection as it is now after a rebuild)."""
        meta = meta or self.meta
        same = meta.identity.compare(self.identity)
        if not same.interchangeable:
            identity = meta.identity
            raise QueryEmbedderMismatch(
                f"{identity.model}: queries would be embedded differently from the collection's rows "
                f"({same.words('collection', 'queries')}); rebuild it with "
                f"`{BuildCommand(identity.model, identity.split, meta.data_root, recreate=True)}` "
                f"(and your --uri) or pass the checkpoint it was built with (--checkpoint)"
            )

    def embed(self, images: Sequence) -> np.ndarray:
        """PIL images -> (n, dim) float32 query vectors."""
        vectors = self.embedder.embed_images(images, decode=self.meta.identity.decode)
        if self.whitening is not None:
            return self.whitening.apply(vectors)
        return l2_normalize(vectors) if self.meta.normalized else vectors


def collection_descriptor(meta: CollectionMeta) -> Descriptor:
    """The descriptor a collection's rows were made with (its pooling and post-processing)."""
    d = Descriptor.parse(meta.identity.descriptor) if meta.identity.descriptor else Descriptor()
    return d if d.whiten else replace(d, unit_length=meta.normalized)


def load_collection_whitening(meta: CollectionMeta) -> Optional["Whitening"]:
    """The learned whitening a collection's rows went through (checked by fingerprint), or None."""
    if not meta.identity.whitening:
        return None
    from indexer.whitening import Whitening

    if not meta.whitening_path or not Path(meta.whitening_path).is_file():
        raise StoreError(
            f"{meta.key.collection_name} was whitened with {meta.identity.whitening[:19]}, whose file "
            f"{meta.whitening_path or '(not recorded)'} is not here: queries cannot be whitened the same way"
        )
    return Whitening.load(Path(meta.whitening_path), meta.identity.whitening)
