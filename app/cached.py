"""What every page caches across reruns and sessions: one Backend per database, split and descriptors (shared
by the pages, so that a build's changes are told once), and the thumbnails they draw."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import streamlit as st

from app.backend import AppSettings, Backend, thumbnail


@st.cache_resource(show_spinner="Connecting to Milvus and reading collections…")
def get_backend(
    uri: str, data_root: str, split: str, token: str, descriptors: Tuple[Tuple[str, str], ...] = ()
) -> Backend:
    return Backend(
        AppSettings(uri=uri, data_root=data_root or None, split=split, token=token, descriptors=dict(descriptors))
    )


def backend_for(settings: AppSettings) -> Backend:
    """The cached backend of the database, data root, split and per-model descriptors (``--descriptors``: which
    collection each model's column and map read) ``settings`` name."""
    descriptors = tuple(sorted(settings.descriptors.items()))
    return get_backend(settings.uri, settings.data_root or "", settings.split, settings.token, descriptors)


@st.cache_data(show_spinner=False, max_entries=4096)
def cached_thumbnail(path: str):
    return thumbnail(Path(path))
