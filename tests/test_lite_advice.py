"""The build's advice to leave Milvus Lite past its size (rows x dims where its FLAT search turns slow)."""

import logging

from support.builds import extract_config
from support.data import make_tiny_layout

from indexer.lite_advice import THRESHOLD_ENV, server_advice
from indexer.milvus_store import VectorStore

MODELS = {"gresnet": 48, "convnext": 32, "vit": 16}  # small stand-in dims: only the search path is under test
ROWS = 120


def test_server_advice_threshold():
    assert server_advice(True, "c", 100, 2048, threshold_rows_x_dim=100 * 2048) is not None
    assert server_advice(True, "c", 99, 2048, threshold_rows_x_dim=100 * 2048) is None
    assert server_advice(False, "c", 10**7, 2048, threshold_rows_x_dim=1) is None  # already on a server
    line = server_advice(True, "gresnet__x__val", 50_000, 2048)
    assert line and "--uri http://" in line and "50,000 rows" in line and "\n" not in line


def test_build_prints_the_server_line_past_the_threshold(tmp_path, monkeypatch, caplog):
    from indexer.build import build

    root = make_tiny_layout(tmp_path / "ds", n_per_class=3)
    store = VectorStore(str(tmp_path / "milvus.db"))
    cfg = extract_config(root, tmp_path / "emb", batch_size=8)
    with caplog.at_level(logging.WARNING, logger="indexer"):
        build(cfg, store, progress=False)
    assert not [r for r in caplog.records if "--uri http://" in r.getMessage()]  # 6 rows: Lite is fine

    monkeypatch.setenv(THRESHOLD_ENV, "6")  # 6 rows x any dim passes
    store.close()
    store = VectorStore(str(tmp_path / "milvus.db"))  # a store takes the settings as it opens
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexer"):
        result = build(cfg, store, progress=False)
    lines = [r.getMessage() for r in caplog.records if "--uri http://" in r.getMessage()]
    assert len(lines) == 1 and result.collection in lines[0] and "6 rows" in lines[0]
    store.close()
