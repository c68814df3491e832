"""GResNet features against an independent reference forward and a stored golden file.

The fusion tests compare the fused model with the unfused one, so a bug shared by both (an
activation, the normalisation order, a stride) passes them. Here the reference is written from
the blog's description with plain torch ops on the model's own state dict:

* ResNet-D deep stem: three 3x3 convs 32/64/128, stride 2 on the first, no max-pool;
* bottlenecks stride on their 3x3 conv, every stage's first block included;
* downsampling shortcuts: 2x2 average pooling, then a stride-1 1x1 conv;
* SiLU wherever ResNet has ReLU;
* split normalisation: BN statistics (running mean/var) on each conv's *input*, the learnable
  per-channel affine *after* the conv.

Weights, statistics and affines are all set from one seeded generator (none left at their
initial value), so the features do not depend on the model's own initialisation code.
"""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.utils import reparameterize_model

import embed.models.gresnet  # noqa: F401  (registers gresnet50 with timm)

# full-size GResNet forward passes against the reference
pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).parent / "data" / "gresnet50_golden_features.npy"
GOLDEN_CHANNELS = np.arange(0, 2048, 128)  # 16 values per image
SEED = 1234
SIZE = 80  # 40 -> 20 -> 10 -> 5 -> 3: the last shortcut pools an odd map (ceil mode)
EPS = 1e-5


def seeded_state_dict(model: torch.nn.Module, seed: int = SEED) -> dict:
    """Every tensor of the model's state dict set from one generator, in sorted key order.

    Convs and affines are drawn at random. The running statistics are first measured on a
    calibration batch by the reference forward below (random statistics alone would let the
    activations drift until the features no longer depend on the image), then perturbed at random,
    so that the statistics differ from the batch statistics and from 0/1.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(model.state_dict()):
        ref = model.state_dict()[key]
        if key.endswith(("num_batches_tracked", "running_mean", "running_var")):
            sd[key] = ref.clone().double()
        elif key.endswith("affine.weight"):
            sd[key] = (torch.rand(ref.shape, generator=g) * 0.6 + 0.4).double()
        elif key.endswith("affine.bias") or key == "fc.bias":
            sd[key] = (torch.randn(ref.shape, generator=g) * 0.1).double()
        elif ref.dim() == 4 or key == "fc.weight":  # conv weights, He-scaled
            sd[key] = (torch.randn(ref.shape, generator=g) * (2.0 / ref[0].numel()) ** 0.5).double()
        else:
            raise AssertionError(f"unexpected tensor {key}: the reference below does not know it")
    with torch.no_grad():
        reference_features(sd, fixed_input(8, seed=seed + 1).double(), calibrate=True)
    for key in sorted(sd):
        if key.endswith("running_mean"):
            std = sd[key.replace("running_mean", "running_var")].sqrt()
            sd[key] = sd[key] + 0.2 * std * torch.randn(sd[key].shape, generator=g).double()
        elif key.endswith("running_var"):
            sd[key] = sd[key] * torch.exp(0.3 * torch.randn(sd[key].shape, generator=g)).double()
    return {k: v.to(model.state_dict()[k].dtype) for k, v in sd.items()}


@pytest.fixture(scope="module")
def seeded_pair():
    """(unfused, fused) GResNet-50 with the seeded weights."""
    model = timm.create_model("gresnet50", num_classes=0)
    model.load_state_dict(seeded_state_dict(model))
    model.eval()
    return model, reparameterize_model(model)


def fixed_input(n: int = 2, size: int = SIZE, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# the reference ---------------------------------------------------------------------------------


def split_norm_conv(x, sd, prefix, stride, kernel, calibrate=False):
    """BN statistics on the input channels, conv (zero padding of the normalised input), affine after.

    ``calibrate`` first stores this batch's statistics as the running ones (used to make test weights).
    """
    if calibrate:
        sd[prefix + ".norm.running_mean"] = x.mean(dim=(0, 2, 3))
        sd[prefix + ".norm.running_var"] = x.var(dim=(0, 2, 3), unbiased=False)
    mean = sd[prefix + ".norm.running_mean"].view(1, -1, 1, 1)
    var = sd[prefix + ".norm.running_var"].view(1, -1, 1, 1)
    x = (x - mean) / torch.sqrt(var + EPS)
    y = F.conv2d(x, sd[prefix + ".conv.weight"], stride=stride, padding=kernel // 2)
    return y * sd[prefix + ".affine.weight"].view(1, -1, 1, 1) + sd[prefix + ".affine.bias"].view(1, -1, 1, 1)


def bottleneck(x, sd, prefix, stride, act=F.silu, calibrate=False):
    if prefix + ".downsample.1.conv.weight" in sd:
        pooled = F.avg_pool2d(x, 2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else x
        shortcut = split_norm_conv(pooled, sd, prefix + ".downsample.1", 1, 1, calibrate)
    else:
        shortcut = x
    y = act(split_norm_conv(x, sd, prefix + ".conv1", 1, 1, calibrate))
    y = act(split_norm_conv(y, sd, prefix + ".conv2", stride, 3, calibrate))
    y = split_norm_conv(y, sd, prefix + ".conv3", 1, 1, calibrate)
    return act(y + shortcut)


def reference_features(sd, x, layers=(3, 4, 6, 3), act=F.silu, calibrate=False):
    """Pooled pre-logits of GResNet-50, from the state dict alone."""
    x = act(split_norm_conv(x, sd, "conv1.0", 2, 3, calibrate))
    x = act(split_norm_conv(x, sd, "conv1.2", 1, 3, calibrate))
    x = act(split_norm_conv(x, sd, "conv1.4", 1, 3, calibrate))
    for stage, depth in enumerate(layers, start=1):
        for i in range(depth):
            # no max-pool: every stage, the first included, opens with stride 2 on the 3x3 conv
            x = bottleneck(x, sd, f"layer{stage}.{i}", 2 if i == 0 else 1, act, calibrate)
    return x.mean(dim=(2, 3))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_reference_agrees_with_the_model_unfused_and_fused(seeded_pair):
    model, fused_model = seeded_pair
    sd = {k: v.double() for k, v in model.state_dict().items()}
    x = fixed_input()
    with torch.inference_mode():
        ref = reference_features(sd, x.double()).float()
        unfused = model(x)
        fused = fused_model(x)
    assert ref.shape == unfused.shape == (2, 2048)
    assert _rel(ref[0], ref[1]) > 0.05, "features that ignore the image would make this comparison blind"
    assert _rel(unfused, ref) < 1e-4, (
        f"unfused GResNet differs from the reference forward: rel {_rel(unfused, ref):.3g}"
    )
    assert _rel(fused, ref) < 1e-4, f"fused GResNet differs from the reference forward: rel {_rel(fused, ref):.3g}"


def test_reference_is_sensitive_to_what_it_guards(seeded_pair):
    """The reference itself tells a ReLU or a skipped normalisation apart (it is not blind to them)."""
    sd = {k: v.double() for k, v in seeded_pair[0].state_dict().items()}
    x = fixed_input().double()
    with torch.inference_mode():
        ref = reference_features(sd, x)
        no_stats = {
            k: (
                torch.zeros_like(v)
                if k.endswith("running_mean")
                else torch.ones_like(v) - EPS
                if k.endswith("running_var")
                else v
            )
            for k, v in sd.items()
        }
        assert _rel(reference_features(no_stats, x), ref) > 1e-2
        assert _rel(reference_features(sd, x, act=F.relu), ref) > 1e-2


def test_golden_features(seeded_pair):
    """Pooled features stored in tests/data (regenerate with: python tests/test_gresnet_reference.py)."""
    model, fused_model = seeded_pair
    golden = np.load(GOLDEN)
    x = fixed_input()
    with torch.inference_mode():
        unfused = model(x).numpy()[:, GOLDEN_CHANNELS]
        fused = fused_model(x).numpy()[:, GOLDEN_CHANNELS]
    assert golden.dtype == np.float32 and golden.shape == (2, len(GOLDEN_CHANNELS))
    scale = np.abs(golden).max()
    np.testing.assert_allclose(
        unfused, golden, rtol=0, atol=1e-3 * scale, err_msg="GResNet features changed from the stored golden values"
    )
    np.testing.assert_allclose(
        fused, golden, rtol=0, atol=1e-3 * scale, err_msg="fused GResNet features changed from the stored golden values"
    )


if __name__ == "__main__":
    # regenerate the golden file, from the reference forward (not the model under test)
    model = timm.create_model("gresnet50", num_classes=0)
    state = seeded_state_dict(model)
    with torch.inference_mode():
        feats = reference_features({k: v.double() for k, v in state.items()}, fixed_input().double())
    GOLDEN.parent.mkdir(exist_ok=True)
    np.save(GOLDEN, feats.numpy()[:, GOLDEN_CHANNELS].astype(np.float32))
    print(f"wrote {GOLDEN}")
