"""Every mapped tensor equals its source tensor, by an explicit source -> target key list.

The lists are written from the naming rules of each checkpoint format, not from the mapping under
test, so a mapping that pairs two same-shaped tensors wrongly (BN mean/var, weight/bias) fails here.
"""

import re

import pytest
import timm
import torch

from embed.models.catalog import REGISTRY
from embed.models.checkpoint_mapping import CheckpointMismatchError, fit_state_dict
from embed.models.gresnet import checkpoint_filter_fn
from embed.models.weights import read_checkpoint

# timm's EfficientNet-Lite keeps the first and last stage at one block and scales the others
EFFNET_LITE_STAGE_DEPTHS = {
    "effnet-lite0": (1, 2, 2, 3, 3, 4, 1),
    "effnet-lite1": (1, 3, 3, 4, 4, 5, 1),
    "effnet-lite2": (1, 3, 3, 4, 4, 5, 1),
}

# lukemelas EfficientNet block parts -> timm module names, for the two block kinds
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z_]+\d?)\.(\w+)$")


def effnet_key_pairs(source_keys, stage_depths):
    """(lukemelas key, timm key) for every tensor of a lukemelas EfficientNet-Lite checkpoint."""
    positions = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {int(m.group(1)) for k in source_keys if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    pairs = []
    for key in source_keys:
        if key.endswith("num_batches_tracked"):
            continue
        m = _BLOCK_KEY.match(key)
        if m:
            block, part, param = int(m.group(1)), m.group(2), m.group(3)
            stage, index = positions[block]
            parts = _INVERTED_RESIDUAL if block in expanded else _DEPTHWISE_SEPARABLE
            pairs.append((key, f"blocks.{stage}.{index}.{parts[part]}.{param}"))
        else:
            module, param = key.split(".")
            pairs.append((key, f"{_TOP_LEVEL[module]}.{param}"))
    return pairs


def test_effnet_key_rules_on_known_pairs():
    """The rules above, checked on pairs read off the two nets' printed module trees."""
    keys = [
        "_conv_stem.weight",
        "_bn0.running_mean",
        "_blocks.0._depthwise_conv.weight",
        "_blocks.0._bn1.running_var",
        "_blocks.0._bn2.bias",
        "_blocks.1._expand_conv.weight",
        "_blocks.1._bn0.running_mean",
        "_blocks.1._bn1.weight",
        "_blocks.2._bn2.running_var",
        "_blocks.3._project_conv.weight",
        "_blocks.15._bn2.weight",
        "_conv_head.weight",
        "_bn1.bias",
        "_fc.weight",
        # blocks with an expansion conv are inverted residuals (the key's presence decides)
        "_blocks.2._expand_conv.weight",
        "_blocks.3._expand_conv.weight",
        "_blocks.15._expand_conv.weight",
    ]
    assert dict(effnet_key_pairs(keys, EFFNET_LITE_STAGE_DEPTHS["effnet-lite0"])) == {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn1.running_var": "blocks.0.0.bn1.running_var",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn0.running_mean": "blocks.1.0.bn1.running_mean",
        "_blocks.1._bn1.weight": "blocks.1.0.bn2.weight",
        "_blocks.2._bn2.running_var": "blocks.1.1.bn3.running_var",
        "_blocks.3._project_conv.weight": "blocks.2.0.conv_pwl.weight",
        "_blocks.15._bn2.weight": "blocks.6.0.bn3.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
        "_fc.weight": "classifier.weight",
        "_blocks.2._expand_conv.weight": "blocks.1.1.conv_pw.weight",
        "_blocks.3._expand_conv.weight": "blocks.2.0.conv_pw.weight",
        "_blocks.15._expand_conv.weight": "blocks.6.0.conv_pw.weight",
    }


@pytest.mark.parametrize("name", sorted(EFFNET_LITE_STAGE_DEPTHS))
def test_effnet_mapping_pairs_every_tensor_with_its_source(name):
    if name not in REGISTRY:
        pytest.skip(f"the registry has no {name!r} model yet (registry entries for effnet-lite1/2 come with issue 14)")
    spec = REGISTRY[name]
    path = spec.package_weights() if spec.package_weights else None
    if path is None:
        pytest.skip(f"the weights package for {name} is not installed")
    source = read_checkpoint(path)
    model = timm.create_model(spec.timm_name)  # with its classifier: the head is mapped too
    assert tuple(len(stage) for stage in model.blocks) == EFFNET_LITE_STAGE_DEPTHS[name]
    mapped = fit_state_dict(source, model, path.name)

    pairs = effnet_key_pairs(list(source), EFFNET_LITE_STAGE_DEPTHS[name])
    targets = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert {dst for _, dst in pairs} == targets, "the key list must cover every tensor of the model"
    wrong = [f"{dst} <- should be {src}" for src, dst in pairs if not torch.equal(mapped[dst], source[src])]
    assert not wrong, f"{len(wrong)} tensors mapped from the wrong source: {wrong[:6]}"


# GResNet: torchvision reference-script checkpoints (EMA weights under module.) ---------------------

GRESNET_KEY_PAIRS = [
    ("module.conv1.0.norm.running_mean", "conv1.0.norm.running_mean"),
    ("module.conv1.0.norm.running_var", "conv1.0.norm.running_var"),
    ("module.conv1.0.conv.weight", "conv1.0.conv.weight"),
    ("module.conv1.0.affine.weight", "conv1.0.affine.weight"),
    ("module.conv1.0.affine.bias", "conv1.0.affine.bias"),
    ("module.conv1.4.affine.bias", "conv1.4.affine.bias"),
    ("module.layer1.0.conv1.norm.running_mean", "layer1.0.conv1.norm.running_mean"),
    ("module.layer1.0.conv2.conv.weight", "layer1.0.conv2.conv.weight"),
    ("module.layer1.0.conv3.affine.weight", "layer1.0.conv3.affine.weight"),
    ("module.layer1.0.downsample.1.norm.running_var", "layer1.0.downsample.1.norm.running_var"),
    ("module.layer1.0.downsample.1.conv.weight", "layer1.0.downsample.1.conv.weight"),
    ("module.layer1.0.downsample.1.affine.bias", "layer1.0.downsample.1.affine.bias"),
    ("module.layer2.3.conv2.norm.running_var", "layer2.3.conv2.norm.running_var"),
    ("module.layer3.5.conv1.affine.weight", "layer3.5.conv1.affine.weight"),
    ("module.layer4.2.conv3.affine.bias", "layer4.2.conv3.affine.bias"),
    ("module.layer4.0.downsample.1.affine.weight", "layer4.0.downsample.1.affine.weight"),
    ("module.fc.weight", "fc.weight"),
    ("module.fc.bias", "fc.bias"),
]


def test_gresnet_checkpoint_filter_pairs_every_tensor_with_its_source():
    model = timm.create_model("gresnet50")
    g = torch.Generator().manual_seed(5)
    # distinct random values in every tensor, so that any two same-shaped tensors swapped are told apart
    ema = {
        "module." + k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
        for k, v in model.state_dict().items()
    }
    ema["n_averaged"] = torch.tensor(7)
    stale = {k: torch.zeros_like(v) for k, v in ema.items()}
    checkpoint = {"model": stale, "model_ema": ema, "optimizer": {}, "epoch": 599}
    mapped = checkpoint_filter_fn(checkpoint, model)

    expected = {k for k in model.state_dict() if not k.endswith("pad_value")}
    assert set(mapped) == expected, "every model tensor comes from the checkpoint, and nothing else"
    for src, dst in GRESNET_KEY_PAIRS:
        assert dst in expected, f"{dst} is not a GResNet tensor: the key list is out of date"
        assert torch.equal(mapped[dst], ema[src]), f"{dst} is not {src}"
    # and the rule behind the list, for every other tensor: EMA weights, 'module.' stripped
    wrong = [k for k in expected if not torch.equal(mapped[k], ema["module." + k])]
    assert not wrong, f"tensors not taken from the EMA weights of the same name: {wrong[:6]}"


def test_gresnet_structural_fit_pairs_every_tensor_with_its_source():
    """A checkpoint whose names say nothing (another model definition) is placed by order and shape.

    The explicit list: the i-th tensor of the author's file is the i-th tensor of our GResNet, for all of
    them, so any two same-shaped tensors swapped (a BN mean with its var, an affine weight with its bias)
    or any one left out fails by name.
    """
    model = timm.create_model("gresnet50")
    g = torch.Generator().manual_seed(6)
    ours = [(k, v) for k, v in model.state_dict().items() if not k.endswith(("pad_value", "num_batches_tracked"))]
    foreign = {
        f"backbone.t{i:03d}": (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
        for i, (_, v) in enumerate(ours)
    }
    pairs = [(f"backbone.t{i:03d}", k) for i, (k, _) in enumerate(ours)]
    mapped = fit_state_dict(foreign, model, "foreign.pth", skip_target=("pad_value",))
    assert {dst for _, dst in pairs} <= set(mapped)
    wrong = [
        f"{dst} <- should be {src}"
        for src, dst in pairs
        if foreign[src].is_floating_point() and not torch.equal(mapped[dst], foreign[src])
    ]
    assert not wrong, f"{len(wrong)} tensors placed from the wrong source: {wrong[:6]}"
    with pytest.raises(CheckpointMismatchError, match="could not be placed"):
        fit_state_dict(
            {**foreign, "backbone.extra": torch.zeros(3, 3)}, model, "foreign.pth", skip_target=("pad_value",)
        )
