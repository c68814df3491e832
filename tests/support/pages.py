"""An app page under Streamlit's AppTest, started as the README starts the app."""

from __future__ import annotations

import sys
from typing import Sequence

from app.navigation import MAPS_FILE
from support.data import REPO
from support.waits import HANG_S


def run_page(args: Sequence[str], monkeypatch, page: str = MAPS_FILE):
    """``page`` (a file under app/) run once through app/main.py with ``args`` as its command line
    (``streamlit run app/main.py -- ARGS``); fails on any exception the page raised."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["main.py", *args])
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=HANG_S)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
