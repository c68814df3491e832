"""The app's pages, each with its title in the sidebar: app/main.py registers them, the pages link to each other.

Every page is a file in ``app/views/`` (search.py, evaluation.py, maps.py), built the same way: it reads its
settings, draws, and runs on its own too (Streamlit's AppTest runs a page file alone). ``st.navigation`` names
pages by their titles; without it Streamlit names the first page after its file. The page files live in
``app/views/``, not ``app/pages/``: Streamlit routes a URL to a ``pages/`` file directly, sidebar and all, until
some session has run ``st.navigation``, so a first visit to /evaluation would show Streamlit's own page list.
Their URLs are their file names (/search, /evaluation, /maps): Streamlit's AppTest ``switch_page`` matches a page
by its file name before the app's first run, and a custom ``url_path`` would not match it.
"""

from __future__ import annotations

from typing import Dict, Optional

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from embed.common.settings import SettingsError

SEARCH_FILE = "views/search.py"  # relative to app/main.py, as Streamlit resolves page files
EVALUATION_FILE = "views/evaluation.py"
MAPS_FILE = "views/maps.py"
_registered: Dict[str, StreamlitPage] = {}


def run() -> None:
    """Show the sidebar's page list and run the chosen page (Search unless the URL names another)."""
    pages = {
        SEARCH_FILE: st.Page(SEARCH_FILE, title="Search", icon=":material/image_search:", default=True),
        EVALUATION_FILE: st.Page(EVALUATION_FILE, title="Evaluation", icon=":material/analytics:"),
        MAPS_FILE: st.Page(MAPS_FILE, title="Maps", icon=":material/scatter_plot:"),
    }
    _registered.update(pages)
    page = st.navigation(list(pages.values()))
    try:
        page.run()
    except SettingsError as e:  # every page reads the RETRIEVAL_* variables first
        st.error(f"Cannot start: {e}. Correct or unset it, then restart the app.")


def switch_to_search(query_params: Optional[Dict[str, str]] = None) -> None:
    """Open the Search page: the one app/main.py registered, or, when a page file runs on its own (as Streamlit's
    AppTest runs it), the entry script itself."""
    page = _registered.get(SEARCH_FILE)
    st.switch_page(page if page is not None else "main.py", query_params=query_params)
