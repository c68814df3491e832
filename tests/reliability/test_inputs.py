"""Bad files in a dataset and as uploads: convertible ones indexed correctly, the rest skipped and listed."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from support.data import bomb_png, gradient
from support.processes import MODEL, build_cmd, run

from app.backend import load_upload
from embed.common.identity import EmbeddingKey
from embed.sources.imaging import BadImage
from indexer.milvus_store import VectorStore

# real CLI builds over bad inputs
pytestmark = pytest.mark.slow

# the documented 20 MiB (docs/app.md), not the constant: a wrong constant must fail here, and
# must not make a test allocate gigabytes
UPLOAD_LIMIT_BYTES = 20 * 1024 * 1024


def _save(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _rotated_with_exif(upright: Image.Image) -> bytes:
    """Pixels stored rotated, with EXIF orientation 6 so that a viewer shows ``upright``."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this with a 270 turn
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, "PNG", exif=exif.tobytes())


def _bad_input_dataset(root):
    base = Image.fromarray(gradient(80, 48, 7))
    good = {
        "cmyk.jpg": _save(base.convert("CMYK"), "JPEG"),
        "gray16.png": _save(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), "PNG"),
        "rgba.png": _save(base.convert("RGBA"), "PNG"),
        "palette.gif": _save(base.convert("P"), "GIF"),
        "upright.png": _save(base, "PNG"),
        "exif_rotated.png": _rotated_with_exif(base),
        "wide.jpg": _save(Image.new("RGB", (10000, 400), (30, 120, 200)), "JPEG", quality=70),
        "UPPER.JPG": _save(base, "JPEG"),
        "mixed.JpEg": _save(base, "JPEG"),
        "bitmap.bmp": _save(base, "BMP"),
        "photo.webp": _save(base, "WEBP"),
    }
    bad = {
        "empty.jpg": b"",
        "text.png": b"hello, I am text\n" * 20,
        "truncated.jpg": _save(base, "JPEG")[:300],
        "bomb.png": bomb_png(40000, 40000),
    }
    folder = root / "val" / "n01440764"
    folder.mkdir(parents=True)
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not listed: no image extension")
    return good, bad


def test_dataset_with_every_kind_of_bad_input(tmp_path):
    good, bad = _bad_input_dataset(tmp_path / "ds")
    uri = str(tmp_path / "db.db")
    res = run(build_cmd(tmp_path / "ds", tmp_path / "emb", uri), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rows"] == len(good) and summary["skipped_images"] == len(bad)
    for name in bad:
        assert name in res.stderr, f"{name} should be listed as skipped"
    assert "Traceback" not in res.stderr

    store = VectorStore(uri)
    ids, vectors, _, paths = store.read_all(EmbeddingKey(MODEL, "ds", "val").collection_name)
    store.close()
    by_name = {p.rsplit("/", 1)[1]: v for p, v in zip(paths, vectors)}
    assert set(by_name) == set(good)
    # orientation applied: the EXIF-rotated file embeds exactly like the upright original
    np.testing.assert_allclose(by_name["exif_rotated.png"], by_name["upright.png"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(by_name["exif_rotated.png"], by_name["cmyk.jpg"], atol=1e-3)


@pytest.mark.parametrize("name", ["empty", "text", "truncated", "bomb", "huge"])
def test_bad_uploads_are_refused_with_a_reason(name):
    data = {
        "empty": b"",
        "text": b"not an image" * 100,
        "truncated": _save(Image.new("RGB", (64, 64)), "JPEG")[:200],
        "bomb": bomb_png(40000, 40000),
        "huge": b"\xff" * (UPLOAD_LIMIT_BYTES + 1),
    }[name]
    with pytest.raises(BadImage) as e:
        load_upload(data)
    assert e.value.reason


def test_convertible_uploads_become_rgb():
    base = Image.fromarray(gradient(40, 30, 1))
    for data in (
        _save(base.convert("CMYK"), "JPEG"),
        _save(base.convert("P"), "GIF"),
        _rotated_with_exif(base),
        _save(base.convert("RGBA"), "PNG"),
    ):
        im = load_upload(data)
        assert im.mode == "RGB" and im.size == base.size


def _png_padded_to(n_bytes: int) -> bytes:
    """A valid PNG followed by zero bytes (ignored after IEND) up to ``n_bytes``."""
    png = _save(Image.fromarray(gradient(40, 30, 2)), "PNG")
    return png + b"\0" * (n_bytes - len(png))


def test_upload_past_the_byte_limit_is_refused_as_too_large():
    limit = UPLOAD_LIMIT_BYTES
    assert load_upload(_png_padded_to(limit)).size == (40, 30), "a valid image at the limit is accepted"
    with pytest.raises(BadImage) as e:
        load_upload(_png_padded_to(limit + 1))
    assert e.value.reason == f"file too large ({limit + 1:,} bytes; the limit is 20 MiB)"


def test_upload_over_the_pixel_limit_is_refused_by_our_check():
    from embed.sources.imaging import too_many_pixels

    with pytest.raises(BadImage) as e:
        load_upload(bomb_png(8000, 7500))  # 60 MP, over the 50 MP limit of every image
    assert (
        e.value.reason
        == too_many_pixels(8000, 7500)
        == "too many pixels: 8,000 x 7,500 = 60,000,000; the limit is 50,000,000"
    )
