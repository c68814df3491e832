import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from support.data import bad_images, bomb_png, exif_rotated_jpeg, good_images, gradient

from embed.sources.imaging import MAX_IMAGE_PIXELS, BadImage, load_rgb, read_bytes_capped, too_many_pixels


@pytest.mark.parametrize("name,data", good_images(), ids=[n for n, _ in good_images()])
def test_convertible_images_become_rgb(name, data, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert min(im.size) > 0
    # the same bytes decode the same way from memory (uploads) as from disk (datasets)
    assert np.array_equal(np.asarray(im), np.asarray(load_rgb(data)))


def test_exif_orientation_is_applied():
    im = load_rgb(exif_rotated_jpeg(40, 20))
    assert im.size == (20, 40), "EXIF orientation 6 must turn a 40x20 landscape into 20x40 portrait"


def test_sixteen_bit_gray_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = np.asarray(load_rgb(buf.getvalue()))[0, :, 0]
    assert out[0] == 0 and 120 < out[1] < 136 and out[2] == 255


def test_transparent_pixels_composite_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert tuple(np.asarray(load_rgb(buf.getvalue()))[0, 0]) == (255, 255, 255)


@pytest.mark.parametrize("name,data,reason", bad_images(), ids=[b[0] for b in bad_images()])
def test_bad_files_raise_badimage_with_reason(name, data, reason, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImage) as e:
        load_rgb(path)
    assert reason in e.value.reason


def test_bomb_is_refused_from_header_without_decoding(monkeypatch):
    from PIL import ImageFile

    def decode(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    with pytest.raises(BadImage, match="too many pixels: 40,000 x 40,000"):
        load_rgb(bomb_png(40000, 40000))


def test_ten_thousand_pixel_wide_photo_is_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (10000, 600), (10, 200, 30)).save(buf, "JPEG")
    im = load_rgb(buf.getvalue())
    assert im.size == (10000, 600)


def test_read_bytes_capped_refuses_large_files(tmp_path):
    p = tmp_path / "big.bin"
    p.write_bytes(b"x" * 2000)
    with pytest.raises(BadImage, match="too large"):
        read_bytes_capped(p, 1000)
    assert read_bytes_capped(p, 5000) == b"x" * 2000


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_loader(data):
    try:
        im = load_rgb(data)
    except BadImage:
        return
    assert im.mode == "RGB"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6))
def test_mutated_images_never_crash_the_loader(seed):
    rng = np.random.default_rng(seed)
    name, data = good_images()[seed % len(good_images())]
    raw = bytearray(data)
    for _ in range(rng.integers(1, 8)):
        raw[rng.integers(0, len(raw))] = rng.integers(0, 256)
    try:
        assert load_rgb(bytes(raw)).mode == "RGB"
    except BadImage:
        pass


def test_header_over_the_limit_is_refused_before_decoding():
    """12,000 x 12,000 = 144 MP: only the header is read (the stub data would otherwise come back as "corrupt
    image", or a real file of that size would be decoded in full)."""
    with pytest.raises(BadImage) as e:
        load_rgb(bomb_png(12000, 12000))
    assert e.value.reason == too_many_pixels(12000, 12000, MAX_IMAGE_PIXELS)


def test_per_call_max_pixels_is_applied():
    buf = io.BytesIO()
    Image.fromarray(gradient(100, 80, 4)).save(buf, "PNG")
    data = buf.getvalue()
    with pytest.raises(BadImage) as e:
        load_rgb(data, max_pixels=7999)
    assert e.value.reason == too_many_pixels(100, 80, 7999)
    assert load_rgb(data, max_pixels=8000).size == (100, 80), "the limit is inclusive"
    # a header of about 60 MP: under Pillow's warning threshold, above a 50 MP per-call limit
    with pytest.raises(BadImage) as e:
        load_rgb(bomb_png(8000, 7500), max_pixels=50_000_000)
    assert e.value.reason == too_many_pixels(8000, 7500, 50_000_000)
