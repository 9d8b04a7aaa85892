"""open_image / to_rgb on every odd input the app and the dataset readers may meet."""

import io

import numpy as np
import pytest
from PIL import Image

from core import images
from core.images import ImageError, open_image, to_rgb


def encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rejects_non_image_and_empty():
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"hello, this is text", name="notes.txt")
    with pytest.raises(ImageError, match="empty"):
        open_image(b"")


def test_rejects_truncated_jpeg():
    data = encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        open_image(data[: len(data) // 2])


def test_rejects_huge_image_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="too large"):
        open_image(encode(Image.new("L", (200, 200))))


def test_rejects_tiny_image():
    with pytest.raises(ImageError, match="too small"):
        open_image(encode(Image.new("L", (4, 4))))


def test_path_and_file_object(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode(Image.new("L", (16, 16), 7)))
    assert open_image(path).size == (16, 16)
    assert open_image(io.BytesIO(path.read_bytes())).mode == "L"
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.png")


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    img = open_image(encode(Image.fromarray(arr)))
    rgb = np.asarray(to_rgb(img))
    assert rgb.shape == (16, 16, 3) and rgb.max() == 255 and rgb.min() == 0
    assert rgb[0, 8, 0] == round(1000 / 4000 * 255)


def test_rgba_composited_on_black_and_palette_and_cmyk():
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(to_rgb(open_image(encode(rgba))))[0, 0].tolist() == [0, 0, 0]
    pal = Image.new("RGB", (16, 16), (0, 128, 255)).convert("P")
    assert to_rgb(open_image(encode(pal))).mode == "RGB"
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # white
    assert np.asarray(to_rgb(open_image(encode(cmyk, "JPEG"))))[0, 0].min() > 240


def test_images_are_drawn_at_a_readable_size_with_their_pixels_kept():
    import numpy as np
    from PIL import Image

    from explorer.ui import DISPLAY_MAX, DISPLAY_MIN, display_copy

    small = Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8) % 251, "L")
    shown = display_copy(small)
    factor = shown.width // small.width
    assert max(shown.size) >= DISPLAY_MIN and shown.size == (small.width * factor, small.height * factor)
    # nearest-pixel enlargement: each source pixel becomes a factor x factor block of the same value
    assert np.array_equal(np.asarray(shown)[::factor, ::factor], np.asarray(small))
    big = Image.new("RGB", (4000, 1000))
    assert max(display_copy(big).size) == DISPLAY_MAX and big.size == (4000, 1000)
    middle = Image.new("RGB", (300, 300))
    assert display_copy(middle) is middle
