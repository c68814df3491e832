"""What every page caches across reruns and sessions: one Backend per database and split (shared by the pages,
so that a build's changes are told once), the Evaluation page's store, and the thumbnails they draw."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import streamlit as st

from app.backend import AppSettings, Backend, thumbnail
from embed.common.settings import RetrievalSettings
from indexer.milvus_store import VectorStore


@st.cache_resource(show_spinner="Connecting to Milvus and reading collections…")
def get_backend(uri: str, data_root: str, split: str, token: str, retrieval: Optional[RetrievalSettings]) -> Backend:
    return Backend(AppSettings(uri=uri, data_root=data_root or None, split=split, token=token, retrieval=retrieval))


def backend_for(settings: AppSettings) -> Backend:
    """The cached backend of the database, data root and split ``settings`` name."""
    return get_backend(settings.uri, settings.data_root or "", settings.split, settings.token, settings.retrieval)


@st.cache_resource(show_spinner=False)
def get_store(uri: str, token: str, retrieval: Optional[RetrievalSettings]) -> VectorStore:
    return VectorStore(uri, token, settings=retrieval)


def store_for(settings: AppSettings) -> VectorStore:
    """The cached store of the database ``settings`` name, for a page that reads collections without a Backend."""
    return get_store(settings.uri, settings.token, settings.retrieval)


@st.cache_data(show_spinner=False, max_entries=4096)
def cached_thumbnail(path: str):
    return thumbnail(Path(path))
