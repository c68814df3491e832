"""What every page that reads collections says first: builds that changed them meanwhile, an unusable data root."""

from __future__ import annotations

from typing import Callable, List

import streamlit as st

from app.backend import Backend, CollectionChange

SEEN_KEY = "collections_seen"  # the backend generation this browser session was last told about


DATA_SET_KEY = "data_set"  # the sidebar's Data set, when several are indexed for the split
# what the Search and Maps pages selected among one data set's images and models: meaningless on another
SELECTION_KEYS = ("models", "query_id", "class_filter", "maps_models")


def show_collection_notices(backend: Backend) -> List[CollectionChange]:
    """Say which collections changed since this session last read them (re-read now, once for every session) and
    whether their images can be shown; the changes told."""
    key = f"{SEEN_KEY}:{backend.dataset}"  # each data set's backend numbers its own changes
    changes: List[CollectionChange] = []
    if key not in st.session_state:  # a new session reads the collections as they are: nothing to tell
        backend.changes()
        st.session_state[key] = backend.generation
    else:
        st.session_state[key], changes = backend.changes_since(st.session_state[key])
        for change in changes:  # a build that ran while the page was open
            st.info(change.text)
    unlabelled = backend.labels_notice()
    if unlabelled:
        st.info(unlabelled)
    problem = backend.data_root_problem()
    if problem:
        st.error(problem)
    return changes


def _forget_selection() -> None:
    for key in SELECTION_KEYS:
        st.session_state.pop(key, None)


def choose_data_set(backend: Backend, open_backend: Callable[[str], Backend]) -> Backend:
    """When several data sets are indexed for the split: the sidebar's **Data set** (the backend's own choice
    first: --data-root's, else the one with the most models), a line saying so, and the chosen one's backend
    (``open_backend`` of its data root). The page never switches data sets by itself."""
    if len(backend.data_sets) < 2:
        return backend
    by_name = {d.name: d for d in backend.data_sets}
    if st.session_state.get(DATA_SET_KEY) not in by_name:
        st.session_state[DATA_SET_KEY] = backend.dataset
    chosen = st.sidebar.selectbox(
        "Data set",
        list(by_name),
        key=DATA_SET_KEY,
        format_func=lambda name: by_name[name].label,
        on_change=_forget_selection,
        help="the data sets indexed for this split; each column of the page searches the chosen one",
    )
    if chosen != backend.dataset:
        backend = open_backend(by_name[chosen].data_root)
    st.info(backend.several_data_sets())
    return backend
