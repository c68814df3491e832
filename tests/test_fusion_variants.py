"""The networks the paired benchmark times beside fused GResNet are what its table says they are.

A ratio against a variant is only worth printing if the variant is the network it claims to be: the mean-subtract
fold exact like the border correction, the naive fold really skipping the borders, the post-norm twin GResNet's
own architecture (same multiply-adds), and resnet50d smaller than GResNet (the stem), as the table explains.
"""

import copy
import json

import pytest
import torch
from support.data import REPO

import embed.models.gresnet  # noqa: F401  registers gresnet50
from benchmarks import fusion_variants as fv
from benchmarks.report import render


@pytest.fixture(scope="module")
def models():
    import timm
    from timm.utils import reparameterize_model

    torch.manual_seed(0)
    unfused = fv.nontrivial(timm.create_model("gresnet50", num_classes=0).eval())
    return unfused, reparameterize_model(copy.deepcopy(unfused))


@pytest.mark.parametrize("size", [176, 224, 193])
def test_mean_subtract_is_an_exact_fold_and_the_naive_one_is_not(models, size):
    unfused, fused = models
    exact = fv.max_relative_error(fv.mean_subtract(fused), unfused, size=size, batch=1)
    border = fv.max_relative_error(fused, unfused, size=size, batch=1)
    naive = fv.max_relative_error(fv.naive_fold(fused), unfused, size=size, batch=1)
    assert exact < 1e-4 and border < 1e-4
    assert naive > 100 * max(exact, border), "the naive fold must differ, or its timing row shows nothing"


def test_variants_keep_gresnets_architecture_and_resnet50d_is_smaller(models):
    import timm

    unfused, fused = models
    gresnet = fv.macs(fused)
    assert fv.macs(unfused) == gresnet
    for variant in (fv.mean_subtract(fused), fv.naive_fold(fused), fv.postnorm_twin(unfused)):
        assert fv.macs(variant) == gresnet
    twin = fv.postnorm_twin(unfused)
    assert not any(isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in twin.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules()) == sum(
        isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in unfused.modules()
    )
    resnet50d = fv.macs(timm.create_model("resnet50d", num_classes=0))
    assert 1.15 < gresnet / resnet50d < 1.30, (gresnet, resnet50d)


def test_the_paired_table_names_every_network_with_its_ratio():
    from benchmarks.report import PAIRED_REFERENCES

    names = ["gresnet", *PAIRED_REFERENCES.values()]
    per_prec = {
        "images_per_s": {n: [10.0 + i, 11.0 + i] for i, n in enumerate(names)},
        **{key: round(0.5 + i / 10, 3) for i, key in enumerate(PAIRED_REFERENCES)},
    }
    report = {
        "machine": {"cpu": "test", "cores": 2, "torch": "x", "timm": "y"},
        "date": "today",
        "paired": {
            "rounds": 2,
            "size": 224,
            "batch": 16,
            "fp32": per_prec,
            "bf16": per_prec,
            "gmacs_224": {n: 5.0 for n in names},
            "max_rel_err_vs_unfused_224": {"gresnet": 1e-6},
        },
    }
    md = render(report)
    for i, (key, ref) in enumerate(PAIRED_REFERENCES.items()):
        [row] = [line for line in md.splitlines() if line.startswith(f"| {ref} |")]
        assert row.endswith(f"| {round(0.5 + i / 10, 3)} | {round(0.5 + i / 10, 3)} |"), row
    assert "| gresnet | 5.0 | 10.0 / 11.0 |" in md and "gresnet 1.0e-06" in md


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (REPO / "benchmarks" / "results").glob("*/*.json") if "ratios" in json.loads(p.read_text())),
    ids=lambda p: p.name,
)
def test_every_committed_suite_result_renders(path):
    """The committed results of `python -m benchmarks.run` (older ones lack newer keys) render, each target named."""
    report = json.loads(path.read_text())
    md = render(report)
    for key in report["ratios"]:
        assert f"| {key} |" in md
    for name in report.get("paired", {}).get("fp32", {}).get("images_per_s", {}):
        assert f"| {name} |" in md
