"""The one-forward-pass descriptors benchmark runs (--quick) and writes a JSON that says what it measured."""

import json

from benchmarks.descriptors import main


def test_quick_benchmark_writes_paired_rounds_and_the_extra_time(tmp_path):
    out = tmp_path / "descriptors.json"
    assert main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "descriptors" and doc["quick"] is True
    assert doc["one"] == "avg" and doc["several"] == ["avg", "gem3", "max"]
    assert len(doc["rounds"]) == 2
    for r in doc["rounds"]:
        assert r["one"] > 0 and r["several"] > 0
        assert abs(r["extra"] - (r["one"] / r["several"] - 1)) < 1e-3
    assert doc["within_target"] == (doc["median_extra_time"] <= doc["target_extra_time"] == 0.05)
