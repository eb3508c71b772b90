import io

import numpy as np
import pytest
from PIL import Image

from bad_images import accepted_unusual_files, huge_png, jpeg_bytes, noisy_rgb, png_bytes, rejected_files
from image_jobs.decode import DecodeError, ResizePolicy, decode_image

SQUASH = ResizePolicy(224, 1.0)
CROP = ResizePolicy(224, 0.875)


@pytest.mark.parametrize("policy", [SQUASH, CROP])
def test_decodes_jpeg_to_model_input(policy):
    decoded = decode_image(jpeg_bytes((300, 200), (10, 200, 30)), policy)
    assert decoded.pixels.shape == (224, 224, 3)
    assert decoded.pixels.dtype == np.uint8
    assert (decoded.width, decoded.height) == (300, 200)
    # solid colour survives decode and resize (JPEG is lossy: within a few levels)
    assert np.abs(decoded.pixels.reshape(-1, 3).mean(0) - [10, 200, 30]).max() < 6


def test_centre_crop_keeps_the_centre():
    img = Image.new("RGB", (400, 200), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 50, 200))  # a red band at the left edge falls outside the crop
    decoded = decode_image(png_bytes(img), CROP)
    assert decoded.pixels[:, :, 0].max() < 10
    squashed = decode_image(png_bytes(img), SQUASH)
    assert squashed.pixels[:, :5, 0].min() > 200


@pytest.mark.parametrize("name,data", sorted(rejected_files().items()))
def test_bad_files_are_rejected_with_a_reason(name, data):
    with pytest.raises(DecodeError) as err:
        decode_image(data, SQUASH)
    assert str(err.value)


@pytest.mark.parametrize(
    "name,reason",
    [("zero_bytes.jpg", "empty"), ("text_named.jpg", "not an image"), ("truncated.jpg", "truncated"),
     ("one_pixel.png", "too small")],
)
def test_reasons_name_the_problem(name, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_image(rejected_files()[name], SQUASH)


@pytest.mark.parametrize("name,data", sorted(accepted_unusual_files().items()))
def test_unusual_but_valid_images_decode_to_rgb(name, data):
    decoded = decode_image(data, SQUASH)
    assert decoded.pixels.shape == (224, 224, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((40, 40), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    decoded = decode_image(png_bytes(Image.fromarray(arr)), SQUASH)
    assert 120 <= decoded.pixels.mean() <= 135


def test_alpha_is_composited_not_black():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    decoded = decode_image(png_bytes(rgba), SQUASH)
    assert 120 <= decoded.pixels.mean() <= 135  # the grey background shows through


def test_pixel_limit_rejects_before_decoding():
    with pytest.raises(DecodeError, match="over the limit"):
        decode_image(huge_png(4000, 3000), SQUASH, max_pixels=10_000_000)
    assert decode_image(huge_png(3000, 3000), SQUASH, max_pixels=10_000_000).width == 3000


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (120, 60), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, 60, 60))  # red on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buf.getvalue(), SQUASH)
    assert (decoded.width, decoded.height) == (60, 120)  # portrait once oriented
    top, bottom = decoded.pixels[:100].reshape(-1, 3).mean(0), decoded.pixels[124:].reshape(-1, 3).mean(0)
    assert top[0] > 200 > bottom[0]  # the red half is on top after rotating 90 degrees clockwise


def test_large_jpeg_uses_draft_and_matches_full_decode():
    img = noisy_rgb((1600, 1200), seed=3).resize((1600, 1200))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    decoded = decode_image(buf.getvalue(), SQUASH)
    assert (decoded.width, decoded.height) == (1600, 1200)
    full = np.asarray(img.resize((224, 224), Image.BILINEAR), dtype=np.float32)
    assert np.abs(decoded.pixels.astype(np.float32) - full).mean() < 12
