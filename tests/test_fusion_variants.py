"""The networks the paired benchmark times beside fused GResNet are what its table says they are.

A ratio against a variant is only worth printing if the variant is the network it claims to be: the mean-subtract
fold exact like the border correction, the naive fold really skipping the borders, the post-norm twin GResNet's
own architecture (same multiply-adds), and resnet50d smaller than GResNet (the stem), as the table explains.
"""

import copy
import json

import numpy as np
import pytest
import torch
from support.data import REPO

import embed.models.gresnet  # noqa: F401  registers gresnet50
from benchmarks import fusion_variants as fv
from benchmarks.report import main as report_main
from benchmarks.report import render, suite_result_problem


@pytest.fixture(scope="module")
def models():
    import timm
    from timm.utils import reparameterize_model

    torch.manual_seed(0)
    unfused = fv.nontrivial(timm.create_model("gresnet50", num_classes=0).eval())
    return unfused, reparameterize_model(copy.deepcopy(unfused))


# the borders the fold corrects at every stage: an odd feature map at the last stage (80, 96) or from the first (65)
SIZES = (80, 96, 65)
MACS_SIZE = 96  # multiply-adds scale with the image alike in every network compared


@pytest.mark.parametrize("size", SIZES)
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
    gresnet = fv.macs(fused, MACS_SIZE)
    assert fv.macs(unfused, MACS_SIZE) == gresnet
    for variant in (fv.mean_subtract(fused), fv.naive_fold(fused), fv.postnorm_twin(unfused)):
        assert fv.macs(variant, MACS_SIZE) == gresnet
    twin = fv.postnorm_twin(unfused)
    assert not any(isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in twin.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules()) == sum(
        isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in unfused.modules()
    )
    resnet50d = fv.macs(timm.create_model("resnet50d", num_classes=0), MACS_SIZE)
    assert 1.15 < gresnet / resnet50d < 1.30, (gresnet, resnet50d)


def test_resnet50d_splitnorm_has_resnet50ds_multiply_adds_and_folds_exactly():
    import timm
    from timm.utils import reparameterize_model

    torch.manual_seed(0)
    network = fv.nontrivial(fv.resnet50d_splitnorm())
    resnet50d = timm.create_model("resnet50d", num_classes=0).eval()
    assert fv.macs(network, MACS_SIZE) == fv.macs(resnet50d, MACS_SIZE)
    x = torch.randn(1, 3, MACS_SIZE, MACS_SIZE)
    with torch.no_grad():
        assert network.forward_features(x).shape == resnet50d.forward_features(x).shape
    assert isinstance(network.layer1[0].conv1, embed.models.gresnet.SplitNormConv2d)
    fused = reparameterize_model(copy.deepcopy(network))
    assert not any(isinstance(m, embed.models.gresnet.SplitNormConv2d) for m in fused.modules())
    for size in SIZES:
        assert fv.max_relative_error(fused, network, size=size, batch=1) < 1e-4
    assert fv.max_relative_error(fv.naive_fold(fused), network, size=MACS_SIZE, batch=1) > 1e-3


@pytest.mark.parametrize("which", ["gresnet", "resnet50d_splitnorm", "resnet50d"])
def test_stages_cover_the_whole_network_in_order(models, which):
    import timm

    network = {
        "gresnet": lambda: models[1],
        "resnet50d_splitnorm": fv.resnet50d_splitnorm,
        "resnet50d": lambda: timm.create_model("resnet50d", num_classes=0).eval(),
    }[which]()
    x = torch.randn(1, 3, 96, 96)
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
            "op_ms": {
                p: {"gresnet": {"convolution": 40.0 + i, "other": 2.5, "total": 44.0 + i}}
                for i, p in enumerate(("fp32", "bf16"))
            },
            "conv_ceiling": {"fp32": {"fused_over_resnet50d": 1.07}, "bf16": {"fused_over_resnet50d": 1.31}},
        },
        "ratios": {"fused_over_resnet50d_bf16": {"measured": 0.9, "target": 0.95, "met": False}},
    }
    md = render(report)
    assert "| network | precision | convolution | other | total |" in md
    assert "| gresnet | fp32 | 40.0 | 2.5 | 44.0 |" in md and "| gresnet | bf16 | 41.0 | 2.5 | 45.0 |" in md
    at = list(PAIRED_RATIOS).index("fused_over_resnet50d")
    assert f"| fused_over_resnet50d_fp32 | {round(0.5 + at / 10, 3)} | 1.07 |  |" in md
    assert f"| fused_over_resnet50d_bf16 | {round(2.5 + at / 10, 3)} | 1.31 | 0.95 |" in md
    assert "| network | stem | rest | sum |" in md
    assert "| gresnet | 12.0 | 30.4 | 42.4 |" in md and "| resnet50d_silu | 5.0 | 33.0 | 38.0 |" in md
    for i, (key, (numerator, denominator)) in enumerate(PAIRED_RATIOS.items()):
        [row] = [line for line in md.splitlines() if line.startswith(f"| {key} |")]
        assert row == f"| {key} | {numerator} / {denominator} | {round(0.5 + i / 10, 3)} | {round(2.5 + i / 10, 3)} |"
    i = names.index("gresnet")
    assert f"| gresnet | 5.0 | {10.0 + i} / {11.0 + i} |" in md and "gresnet 1.0e-06" in md


COMMITTED_RESULTS = sorted((REPO / "benchmarks" / "results").glob("*/*.json"))
SUITE_RESULTS = [p for p in COMMITTED_RESULTS if suite_result_problem(json.loads(p.read_text())) is None]
OTHER_RESULTS = [p for p in COMMITTED_RESULTS if p not in SUITE_RESULTS]


def test_the_committed_results_hold_both_kinds():
    """Guards the two tests below against an empty parametrization; every suite result carries its targets."""
    assert SUITE_RESULTS and OTHER_RESULTS
    assert all("ratios" in json.loads(p.read_text()) for p in SUITE_RESULTS)
    assert not any("ratios" in json.loads(p.read_text()) for p in OTHER_RESULTS)


@pytest.mark.parametrize("path", SUITE_RESULTS, ids=lambda p: p.name)
def test_every_committed_suite_result_renders(path, capsys):
    """The committed results of `python -m benchmarks.run` (older ones lack newer keys) render, each target named."""
    report = json.loads(path.read_text())
    assert report_main([str(path)]) == 0
    md = capsys.readouterr().out
    assert md == render(report) + "\n"
    for key in report["ratios"]:
        assert f"| {key} |" in md
    for name in report.get("paired", {}).get("fp32", {}).get("images_per_s", {}):
        assert f"| {name} |" in md


@pytest.mark.parametrize("path", OTHER_RESULTS, ids=lambda p: p.name)
def test_the_renderer_names_another_benchmarks_result_and_stops(path, capsys):
    """A maps, start-up or robustness JSON is refused in one line that names its benchmark, not with a KeyError."""
    report = json.loads(path.read_text())
    with pytest.raises(SystemExit) as stop:
        report_main([str(path)])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    [message] = [line for line in err.splitlines() if "error:" in line]
    assert path.name in message and "not of python -m benchmarks.run" in message
    assert (repr(report["benchmark"]) if "benchmark" in report else "another benchmark script") in message


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"], ids=["missing", "not-json", "not-an-object"])
def test_the_renderer_refuses_an_unreadable_file_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        report_main([str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err.splitlines()[-1]


@pytest.mark.parametrize(
    "op, kind",
    [
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::cudnn_convolution", "convolution"),
        ("aten::native_batch_norm", "batch norm"),
        ("aten::addmm", "matrix product"),
        ("aten::silu_", "activation"),
        ("aten::clamp_min_", "activation"),
        ("aten::add_", "add"),
        ("aten::max_pool2d_with_indices", "pooling"),
        ("aten::avg_pool2d", "pooling"),
        ("aten::_to_copy", "dtype casts"),
        ("aten::empty_strided", "other"),
    ],
)
def test_operators_sort_by_what_they_do(op, kind):
    from benchmarks.paired import op_kind

    assert op_kind(op) == kind


def test_profiled_operators_add_up_by_kind_beside_the_steps_wall_time():
    from benchmarks.paired import ms_by_kind

    events = [
        ("aten::mkldnn_convolution", 1500.0),
        ("aten::convolution", 250.0),
        ("aten::native_batch_norm", 300.0),
        ("aten::silu_", 120.0),
        ("aten::add_", 80.0),
        ("aten::_to_copy", 40.0),
        ("aten::empty_strided", 10.0),
        ("aten::as_strided", 5.0),
    ]
    assert ms_by_kind(events, 2.5) == {
        "convolution": 1.75,
        "batch norm": 0.3,
        "matrix product": 0.0,
        "activation": 0.12,
        "add": 0.08,
        "pooling": 0.0,
        "dtype casts": 0.04,
        "other": 0.015,
        "total": 2500.0,
    }


def test_a_conv_ceiling_is_the_references_step_over_gresnets_convolutions_alone():
    from benchmarks.paired import CEILING_RATIOS, conv_ceilings
    from benchmarks.report import PAIRED_RATIOS

    def step(convolution, total):
        return {"convolution": convolution, "other": total - convolution, "total": total}

    op_ms = {
        "fp32": {"gresnet": step(40.0, 50.0), "resnet50d": step(30.0, 44.0), "resnet50d_silu": step(30.0, 46.0)},
        "bf16": {"gresnet": step(16.0, 25.0), "resnet50d": step(12.0, 20.0), "resnet50d_silu": step(12.0, 21.0)},
    }
    ceilings = conv_ceilings(op_ms)
    assert ceilings == {
        "fp32": {"fused_over_resnet50d": 1.1, "fused_over_resnet50d_silu": 1.15},
        "bf16": {"fused_over_resnet50d": 1.25, "fused_over_resnet50d_silu": 1.312},
    }
    for precision, per_ratio in ceilings.items():
        assert list(per_ratio) == list(CEILING_RATIOS)
        for ratio, ceiling in per_ratio.items():
            # above the ratio of whole steps, as GResNet's other operators cost time too
            reference = op_ms[precision][PAIRED_RATIOS[ratio][1]]["total"]
            assert ceiling > reference / op_ms[precision]["gresnet"]["total"]


def _paired_rounds(per_round_ratios):
    """A paired section whose fused_over_resnet50d ratio takes the given value in each round."""
    den = [20.0 + i for i in range(len(per_round_ratios))]
    per_prec = {
        "images_per_s": {"gresnet": [r * d for r, d in zip(per_round_ratios, den)], "resnet50d": den},
        "fused_over_resnet50d": float(np.median(per_round_ratios)),
    }
    return {"rounds": len(den), "size": 224, "batch": 16, "fp32": per_prec, "bf16": per_prec}


def test_a_median_interval_is_the_order_statistics_that_cover_it_at_95_percent():
    from benchmarks.report import paired_interval

    ratios = [0.93, 1.02, 0.88, 0.97, 0.95, 1.10, 0.91, 0.99, 0.96]
    # 9 rounds: the 2nd and 8th smallest cover the median with probability 1 - 2 * P(Bin(9, 1/2) <= 1) = 96.1%
    assert 1 - 2 * (1 + 9) / 2**9 >= 0.95 > 1 - 2 * (1 + 9 + 36) / 2**9
    ordered = sorted(ratios)
    assert paired_interval(_paired_rounds(ratios), "fp32", "fused_over_resnet50d") == (ordered[1], ordered[7])
    # 5 rounds reach 1 - 2 / 2**5 = 93.8% at most: no 95% interval
    assert paired_interval(_paired_rounds(ratios[:5]), "fp32", "fused_over_resnet50d") is None


@pytest.mark.parametrize(
    "target, met, verdict",
    [
        (0.9, True, "yes"),
        (0.95, True, "yes (within noise)"),
        (1.0, False, "**no** (within noise)"),
        (1.2, False, "**no**"),
    ],
)
def test_the_targets_table_says_when_a_paired_target_lies_within_the_noise(target, met, verdict):
    ratios = [0.93, 1.02, 0.88, 0.97, 0.95, 1.10, 0.91, 0.99, 0.96]
    report = {
        "machine": {"cpu": "test", "cores": 2, "torch": "x", "timm": "y"},
        "date": "today",
        "paired": _paired_rounds(ratios),
        "ratios": {"fused_over_resnet50d_fp32": {"measured": 0.96, "target": target, "met": met}},
    }
    md = render(report)
    assert f"| fused_over_resnet50d_fp32 | 0.96 (0.91-1.02) | {target} | {verdict} |" in md
    assert "| fused_over_resnet50d | gresnet / resnet50d | 0.96 (0.91-1.02) | 0.96 (0.91-1.02) |" in md
