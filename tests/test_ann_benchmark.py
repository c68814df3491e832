"""The ANN benchmark's quick mode runs end to end on the embedded server and its figures hold together."""

from __future__ import annotations

import pytest

from benchmarks.ann import QUICK, bench_ann


@pytest.mark.server
def test_quick_ann_benchmark(milvus_server):
    result = bench_ann(quick=True, uri=f"http://127.0.0.1:{milvus_server.listen_port}")
    rows = result["summary"]
    models = {f"synthetic-{d}d" for d in QUICK.dims}
    kinds = {r["index"].split(" ")[0] for r in rows}
    assert kinds == {"FLAT", "HNSW", "IVF_FLAT"} and {r["model"] for r in rows} == models
    assert all(0.0 <= r["recall_at_10"] <= 1.0 and r["p50_ms"] > 0 and r["qps"] > 0 for r in rows)
    assert all(r["recall_at_10"] >= 0.995 for r in rows if r["index"] == "FLAT")
    # nprobe = nlist visits every cell: IVF_FLAT is exhaustive there
    nlist = int(QUICK.ivf[0].split("=")[1])
    assert all(r["recall_at_10"] >= 0.995 for r in rows if r["search"] == {"nprobe": nlist})
    one_cell = [r["recall_at_10"] for r in rows if r["search"] == {"nprobe": 1}]
    assert len(one_cell) == len(models) and min(one_cell) < 0.995  # one cell of 32 misses neighbours
    assert any("Cheapest setting" in s or "No setting measured" in s for s in result["sentences"])
