"""Every section of `python -m benchmarks.run` still runs: `--smoke` runs each at its smallest sizes, so that a
product change that breaks a benchmark fails here rather than on the next full run. Only that they run and what
they record is checked: their figures are timings of a few batches and mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.data import REPO, tiny_imagenet_root
from support.waits import HANG_S

from benchmarks.report import render

SECTIONS = ("forward", "paired", "e2e", "milvus", "evaluation", "scale")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One `python -m benchmarks.run --smoke` over every CPU section (the GPU one needs a GPU)."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--device", "cpu", "--only", ",".join(SECTIONS)]
        + ["--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text())


def test_every_section_ran_and_the_report_renders_it(smoke):
    assert smoke["smoke"] is True and set(SECTIONS) <= set(smoke)
    md = render(smoke)
    for key in smoke["ratios"]:
        assert f"| {key} |" in md


def test_the_forward_and_paired_sections_give_their_ratios(smoke):
    timed = [r for r in smoke["forward"] if r["images_per_s"]]
    assert {(r["model"], r["channels_last"]) for r in timed} == {
        (m, cl) for m in ("gresnet", "gresnet_unfused", "resnet50d") for cl in (True, False)
    }
    paired = smoke["paired"]
    assert list(paired["fp32"]["images_per_s"]) == ["gresnet", "resnet50d", "resnet50d_silu"]
    assert set(paired["conv_ceiling"]) == {"fp32", "bf16"}
    # the real profiler's figures, by what they hold rather than how long things took: each kind is there, and
    # GResNet has no batch-norm operator left to time (the kinds' sums: tests/test_fusion_variants.py)
    from benchmarks.paired import OP_KINDS

    for precision, per_model in paired["op_ms"].items():
        for name, per in per_model.items():
            assert list(per) == [k for k, _ in OP_KINDS] + ["other", "total"], (precision, name)
            assert min(per.values()) >= 0 and per["total"] > 0 and per["convolution"] > 0, (precision, name)
        assert per_model["gresnet"]["batch norm"] == 0 and per_model["resnet50d"]["batch norm"] > 0
    assert set(paired["op_ms"]) == {"fp32", "bf16"} and paired["op_ms"]["bf16"]["gresnet"]["dtype casts"] > 0
    assert set(paired["stage_ms_fp32"]) == {"gresnet", "resnet50d_silu"}
    # the paired medians replace the grid's single figures for the ratios both give
    for key in ("fused_over_resnet50d_fp32", "fused_over_resnet50d_silu_bf16"):
        assert smoke["ratios"][key]["measured"] == paired[key.rsplit("_", 1)[1]][key.rsplit("_", 1)[0]]
    assert "fused_over_unfused_fp32" in smoke["ratios"]  # from the forward grid


def test_the_e2e_milvus_and_evaluation_sections_record_their_runs(smoke):
    if tiny_imagenet_root() is None:
        assert smoke["e2e"] == [{"skipped": smoke["e2e"][0]["skipped"]}]
    else:
        assert {(r["files"], r["decode"], r["images"]) for r in smoke["e2e"]} == {
            ("tiny-imagenet 64px", decode, 16) for decode in ("workers", "device")
        }
        assert "e2e_over_bare" in smoke["ratios"]
    milvus = smoke["milvus"]
    assert {r["dim"] for r in milvus["insert"]} == {384, 768, 2048} and milvus["search"][0]["rows"] == 1000
    assert "--smoke" in milvus["server_skipped"]
    evaluation = smoke["evaluation"]
    # the naive per-query searches find what the exact evaluation finds on the same queries
    assert evaluation["naive_queries_run"] == 20 and evaluation["p1_naive"] == evaluation["p1_exact_on_naive_queries"]
    assert smoke["ratios"]["exact_over_naive_eval"]["measured"] == evaluation["exact_over_naive"]


def test_the_scale_section_answers_the_apps_clicks_and_uploads(smoke):
    """The app's own backend answers each synthetic click and upload in every column, concurrently as one after
    another, and the evaluation child reads the collections back."""
    scale = smoke["scale"]
    lite = scale["backends"]["lite"]
    assert scale["headline_backend"] == "lite" and "server" not in scale["backends"]
    assert lite["app_query_samples"] == 2 and lite["upload_query_samples"] == 1
    assert lite["concurrent_equals_sequential"] is True
    assert set(lite["column_ms_p50_concurrent"]) == {"effnet-lite0", "vit"}
    assert [(r["model"], r["rows"]) for r in lite["search_curve"]] == [
        (m, rows) for m in ("effnet-lite0", "vit") for rows in (100, 200)
    ]
    assert "failed" not in lite, lite.get("failed")
    assert set(lite["precision_at_1"]) == {"effnet-lite0/raw", "vit/raw"}
    assert smoke["ratios"]["scale_app_query_ms_p50"]["measured"] == scale["app_query_ms_p50"] > 0
