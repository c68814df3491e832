"""What every page caches across reruns and sessions: one Backend per database and split (shared by the pages,
so that a build's changes are told once), and the thumbnails they draw."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.backend import AppSettings, Backend, thumbnail


@st.cache_resource(show_spinner="Connecting to Milvus and reading collections…")
def get_backend(uri: str, data_root: str, split: str, token: str) -> Backend:
    return Backend(AppSettings(uri=uri, data_root=data_root or None, split=split, token=token))


def backend_for(settings: AppSettings) -> Backend:
    """The cached backend of the database, data root and split ``settings`` name."""
    return get_backend(settings.uri, settings.data_root or "", settings.split, settings.token)


@st.cache_data(show_spinner=False, max_entries=4096)
def cached_thumbnail(path: str):
    return thumbnail(Path(path))
