"""What every page that reads collections says first: builds that changed them meanwhile, an unusable data root."""

from __future__ import annotations

import streamlit as st

from app.backend import Backend


def show_collection_notices(backend: Backend) -> bool:
    """Say which collections changed since the page last read them (re-read now) and whether their images can be
    shown; False when they cannot, and the page should stop."""
    for change in backend.changes():  # a build that ran while the page was open
        st.info(change.text)
    problem = backend.data_root_problem()
    if problem:
        st.error(problem)
        return False
    return True
