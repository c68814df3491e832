"""What every page that reads collections says first: builds that changed them meanwhile, an unusable data root."""

from __future__ import annotations

import streamlit as st

from app.backend import Backend

SEEN_KEY = "collections_seen"  # the backend generation this browser session was last told about


def show_collection_notices(backend: Backend) -> None:
    """Say which collections changed since this session last read them (re-read now, once for every session) and
    whether their images can be shown."""
    if SEEN_KEY not in st.session_state:  # a new session reads the collections as they are: nothing to tell
        backend.changes()
        st.session_state[SEEN_KEY] = backend.generation
    else:
        st.session_state[SEEN_KEY], changes = backend.changes_since(st.session_state[SEEN_KEY])
        for change in changes:  # a build that ran while the page was open
            st.info(change.text)
    unlabelled = backend.labels_notice()
    if unlabelled:
        st.info(unlabelled)
    problem = backend.data_root_problem()
    if problem:
        st.error(problem)
