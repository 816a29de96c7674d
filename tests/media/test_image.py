import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mmretrieve.errors import MediaError, UnsupportedMediaError
from mmretrieve.media.image import MAX_IMAGE_PIXELS, as_rgb_array, load_image


def _gradient(h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], -1).astype(np.uint8)


def _check_rgb(img, size):
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size


@pytest.mark.parametrize("ext,kw", [(".png", {}), (".webp", {"lossless": True}), (".bmp", {}), (".tiff", {})])
def test_lossless_formats_round_trip(tmp_path, ext, kw):
    arr = _gradient()
    p = tmp_path / f"a{ext}"
    Image.fromarray(arr).save(p, **kw)
    img = load_image(p)
    _check_rgb(img, (32, 24))
    assert np.array_equal(np.asarray(img), arr)


def test_jpeg(tmp_path):
    arr = _gradient()
    p = tmp_path / "a.jpg"
    Image.fromarray(arr).save(p, quality=95)
    img = load_image(p)
    _check_rgb(img, (32, 24))
    assert np.abs(np.asarray(img).astype(int) - arr).mean() < 4


def test_greyscale(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L").save(p)
    img = load_image(p)
    _check_rgb(img, (12, 10))
    assert np.all(np.asarray(img) == 77)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    p = tmp_path / "g16.png"
    a = np.zeros((4, 4), np.uint16)
    a[0, 0], a[0, 1] = 65535, 32896
    Image.fromarray(a).save(p)
    out = np.asarray(load_image(p))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [128, 128, 128]
    assert out[1, 1].tolist() == [0, 0, 0]


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    img = load_image(p)
    _check_rgb(img, (16, 16))
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[:4] = (255, 0, 0, 255)  # opaque red
    a[4:] = (0, 0, 255, 0)  # fully transparent blue
    p = tmp_path / "a.png"
    Image.fromarray(a, mode="RGBA").save(p)
    out = np.asarray(load_image(p))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[7, 7].tolist() == [255, 255, 255]


def test_la_and_palette_transparency(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    la.save(tmp_path / "la.png")
    assert np.all(np.asarray(load_image(tmp_path / "la.png")) == 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "t.gif", transparency=0)
    assert np.all(np.asarray(load_image(tmp_path / "t.gif")) == 255)


def test_animated_gif_gives_first_frame(tmp_path):
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    blue = Image.new("RGB", (10, 10), (0, 0, 255))
    p = tmp_path / "anim.gif"
    red.save(p, save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(p) as check:
        assert check.n_frames == 2
    out = np.asarray(load_image(p)).reshape(-1, 3).mean(0)
    assert out[0] > 200 and out[2] < 50


@pytest.mark.parametrize("orientation,expected_size", [(1, (40, 20)), (6, (20, 40)), (8, (20, 40)), (3, (40, 20))])
def test_exif_orientation_applied(tmp_path, orientation, expected_size):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # left half white
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    img.save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.size == expected_size
    arr = np.asarray(out).astype(int)
    if orientation == 1:  # as stored: white half on the left
        assert arr[:, :15].mean() > 200 and arr[:, 25:].mean() < 50
    if orientation == 6:  # rotated 90 deg clockwise: the white left half is now on top
        assert arr[:10].mean() > 200 and arr[30:].mean() < 50
    if orientation == 8:  # rotated 90 deg counter-clockwise: the white left half is now at the bottom
        assert arr[30:].mean() > 200 and arr[:10].mean() < 50
    if orientation == 3:  # rotated 180: white half now on the right
        assert arr[:, 25:].mean() > 200 and arr[:, :15].mean() < 50


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels with almost no data (a decompression-bomb shape)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 30_000])  # above our limit; above PIL's own hard limit
def test_decompression_bomb_refused_before_decoding(tmp_path, side):
    assert side * side > MAX_IMAGE_PIXELS
    p = _png_header_only(tmp_path / "bomb.png", side, side)
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match="bomb") as info:
        load_image(p)
    assert time.perf_counter() - t0 < 2.0  # refused from the header, nothing decoded
    assert info.value.path == str(p)


def test_max_pixels_argument(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(_gradient(100, 100)).save(p)
    with pytest.raises(MediaError, match="max_pixels=5000"):
        load_image(p, max_pixels=5000)
    assert load_image(p, max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image(tmp_path, ext):
    rng = np.random.default_rng(0)
    p = tmp_path / f"full{ext}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    q = tmp_path / f"cut{ext}"
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as info:
        load_image(q)
    assert info.value.path == str(q)
    assert "truncated" in info.value.reason.lower() or "decode" in info.value.reason.lower()


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        load_image(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(UnsupportedMediaError) as info:
        load_image(p)
    assert info.value.path == str(p) and "not a recognised image" in info.value.reason


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(MediaError, match="directory"):
        load_image(tmp_path)


def test_load_is_deterministic(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(_gradient()).save(p)
    assert np.array_equal(np.asarray(load_image(p)), np.asarray(load_image(p)))


# ---- as_rgb_array


def test_as_rgb_array_from_pil_modes():
    assert as_rgb_array(Image.new("L", (5, 4), 9)).shape == (4, 5, 3)
    rgba = as_rgb_array(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))
    assert rgba.dtype == np.uint8 and np.all(rgba == 255)


def test_as_rgb_array_numpy():
    hw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = as_rgb_array(hw)
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 1], hw)
    f = np.full((2, 2, 3), 0.5, np.float32)
    assert np.all(as_rgb_array(f) == 128)
    u = _gradient()
    assert as_rgb_array(u) is not None and np.array_equal(as_rgb_array(u), u)


def test_as_rgb_array_torch_chw_and_hwc():
    arr = _gradient()
    chw = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    assert np.array_equal(as_rgb_array(chw), arr)
    assert np.array_equal(as_rgb_array(torch.from_numpy(arr)), arr)
    assert np.array_equal(as_rgb_array(chw.float() / 255.0), arr)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((4, 4, 5), np.uint8), r"shape \(4, 4, 5\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"shape \(2, 4, 4, 3\)"),
        (np.zeros((4, 4, 3), np.uint16), "dtype uint16"),
        (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        ([[1, 2], [3, 4]], "list"),
    ],
)
def test_as_rgb_array_rejects(bad, match):
    with pytest.raises(MediaError, match=match) as info:
        as_rgb_array(bad)
    assert info.value.path is None
