"""Streamlit app: GResNet | ConvNeXt-T | ViT-S retrieval side by side.

Run: ``streamlit run app/main.py -- [--uri URI] [--data-root DIR] [--split val]``

The entry script: the repository on the path, quiet logs, the page configuration, then the pages
(app/navigation.py; each page is a file in app/views/).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, str(ROOT))

from embed.common.logs import quiet_grpc_environment, quiet_third_party_logs  # noqa: E402

quiet_grpc_environment()  # before anything imports grpc
quiet_third_party_logs()

import streamlit as st  # noqa: E402
from streamlit import config as st_config  # noqa: E402

from app import navigation  # noqa: E402
from app.backend import MAX_UPLOAD_MB  # noqa: E402

st.set_page_config(page_title="Backbone retrieval", layout="wide")
# The server rejects uploads above server.maxUploadSize (read on every upload request); the widget shows and
# enforces its own max_upload_size. Both come from the backend's limit, so shown == enforced == MAX_UPLOAD_BYTES.
# (A .streamlit/config.toml would not follow the constant.)
st_config.set_option("server.maxUploadSize", MAX_UPLOAD_MB)

# Pages with titles (Streamlit would name a file-based first page after this file, "main")
navigation.run()
