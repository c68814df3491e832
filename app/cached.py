"""What every page caches across reruns and sessions: one Backend per database, split and descriptors (shared
by the pages, so that a build's changes are told once), the Evaluation page's store, and the thumbnails they draw."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import streamlit as st

from app.backend import AppSettings, Backend, thumbnail
from embed.common.settings import RetrievalSettings
from indexer.milvus_store import VectorStore


@st.cache_resource(show_spinner="Connecting to Milvus and reading collections…")
def get_backend(
    uri: str,
    data_root: str,
    split: str,
    token: str,
    retrieval: Optional[RetrievalSettings],
    descriptors: Tuple[Tuple[str, str], ...] = (),
) -> Backend:
    return Backend(
        AppSettings(
            uri=uri,
            data_root=data_root or None,
            split=split,
            token=token,
            retrieval=retrieval,
            descriptors=dict(descriptors),
        )
    )


def backend_for(settings: AppSettings) -> Backend:
    """The cached backend of the database, data root, split and per-model descriptors (``--descriptors``: which
    collection each model's column and map read) ``settings`` name."""
    descriptors = tuple(sorted(settings.descriptors.items()))
    return get_backend(
        settings.uri, settings.data_root or "", settings.split, settings.token, settings.retrieval, descriptors
    )


@st.cache_resource(show_spinner=False)
def get_store(uri: str, token: str, retrieval: Optional[RetrievalSettings]) -> VectorStore:
    return VectorStore(uri, token, settings=retrieval)


def store_for(settings: AppSettings) -> VectorStore:
    """The cached store of the database ``settings`` name, for a page that reads collections without a Backend."""
    return get_store(settings.uri, settings.token, settings.retrieval)


@st.cache_data(show_spinner=False, max_entries=4096)
def cached_thumbnail(path: str):
    return thumbnail(Path(path))
