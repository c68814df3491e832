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


def test_resnet50d_splitnorm_has_resnet50ds_multiply_adds_and_folds_exactly():
    import timm
    from timm.utils import reparameterize_model

    torch.manual_seed(0)
    network = fv.nontrivial(fv.resnet50d_splitnorm())
    resnet50d = timm.create_model("resnet50d", num_classes=0).eval()
    assert fv.macs(network) == fv.macs(resnet50d)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert network.forward_features(x).shape == resnet50d.forward_features(x).shape
    assert isinstance(network.layer1[0].conv1, embed.models.gresnet.SplitNormConv2d)
    fused = reparameterize_model(copy.deepcopy(network))
    assert not any(isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in fused.modules())
    for size in (176, 224, 193):
        assert fv.max_relative_error(fused, network, size=size, batch=1) < 1e-4
    assert fv.max_relative_error(fv.naive_fold(fused), network, size=224, batch=1) > 1e-3


@pytest.mark.parametrize("which", ["gresnet", "resnet50d_splitnorm", "resnet50d"])
def test_stages_cover_the_whole_network_in_order(models, which):
    import timm

    network = {
        "gresnet": lambda: models[1],
        "resnet50d_splitnorm": fv.resnet50d_splitnorm,
        "resnet50d": lambda: timm.create_model("resnet50d", num_classes=0).eval(),
    }[which]()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        y = x
        for _, part in fv.stages(network):
            y = part(y)
        assert torch.equal(y, network.forward_features(x))
    assert [name for name, _ in fv.stages(network)][:2] == ["stem", "layer1.0"]


def test_the_paired_tables_name_every_network_and_every_ratio():
    from benchmarks.report import PAIRED_RATIOS

    names = sorted({name for pair in PAIRED_RATIOS.values() for name in pair})
    per_prec = {
        "images_per_s": {n: [10.0 + i, 11.0 + i] for i, n in enumerate(names)},
        **{key: round(0.5 + i / 10, 3) for i, key in enumerate(PAIRED_RATIOS)},
    }
    report = {
        "machine": {"cpu": "test", "cores": 2, "torch": "x", "timm": "y"},
        "date": "today",
        "paired": {
            "rounds": 2,
            "size": 224,
            "batch": 16,
            "fp32": per_prec,
            "bf16": {**per_prec, **{key: round(2.5 + i / 10, 3) for i, key in enumerate(PAIRED_RATIOS)}},
            "gmacs_224": {n: 5.0 for n in names},
            "max_rel_err_vs_unfused_224": {"gresnet": 1e-6},
            "stage_ms_fp32": {"gresnet": {"stem": 12.0, "rest": 30.4}, "resnet50d_silu": {"stem": 5.0, "rest": 33.0}},
        },
    }
    md = render(report)
    assert "| network | stem | rest | sum |" in md
    assert "| gresnet | 12.0 | 30.4 | 42.4 |" in md and "| resnet50d_silu | 5.0 | 33.0 | 38.0 |" in md
    for i, (key, (numerator, denominator)) in enumerate(PAIRED_RATIOS.items()):
        [row] = [line for line in md.splitlines() if line.startswith(f"| {key} |")]
        assert row == f"| {key} | {numerator} / {denominator} | {round(0.5 + i / 10, 3)} | {round(2.5 + i / 10, 3)} |"
    i = names.index("gresnet")
    assert f"| gresnet | 5.0 | {10.0 + i} / {11.0 + i} |" in md and "gresnet 1.0e-06" in md


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
