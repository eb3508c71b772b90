import io
import warnings

import numpy as np
import pytest
from PIL import Image

from bad_images import (
    accepted_unusual_files,
    animated_gif,
    giant_png,
    huge_png,
    jpeg_bytes,
    noisy_rgb,
    png_bytes,
    rejected_files,
)
from image_jobs.decode import DecodeError, ResizePolicy, crop_box, decode_image

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


@pytest.mark.parametrize("size", [(224, 224), (300, 200), (200, 300), (257, 999), (640, 480), (1500, 1100), (17, 9)])
def test_resizing_the_crop_box_gives_torchvisions_resize_then_crop(size):
    """Resizing only the kept region (PIL's ``box``) = resizing the whole image, then cropping."""
    img = noisy_rgb(size, seed=sum(size))
    w, h = size
    scale = CROP.short_side / min(w, h)
    new_w, new_h = max(224, round(w * scale)), max(224, round(h * scale))
    left, top = (new_w - 224) // 2, (new_h - 224) // 2
    reference = np.asarray(img.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + 224, top + 224)))
    boxed = np.asarray(img.resize((224, 224), Image.BILINEAR, box=crop_box(w, h, CROP)))
    difference = np.abs(reference.astype(int) - boxed.astype(int))
    assert difference.max() <= 1  # fixed-point rounding between PIL's two passes: at most one level
    assert difference.mean() < 0.3


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


def test_animated_gif_uses_its_first_frame():
    data = animated_gif([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    assert Image.open(io.BytesIO(data)).n_frames == 3
    decoded = decode_image(data, SQUASH)
    assert decoded.pixels.reshape(-1, 3).mean(0).tolist() == [255.0, 0.0, 0.0]  # red: the first frame
    assert (decoded.width, decoded.height) == (40, 30)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1)])
def test_one_pixel_wide_images_are_rejected_not_crashed(size):
    with pytest.raises(DecodeError, match=rf"too small to classify: image is {size[0]}x{size[1]}"):
        decode_image(png_bytes(Image.new("RGB", size, (9, 9, 9))), SQUASH)


def test_400_megapixel_image_is_rejected_on_its_header():
    data = giant_png(20000, 20000)
    assert len(data) < 1_000_000  # small on disk, 400 MB once decoded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert Image.open(io.BytesIO(data)).size == (20000, 20000)  # a valid image, not a broken header
    reason = "too many pixels: image is 20000x20000 = 400000000 pixels, over the limit of 50000000"
    with pytest.raises(DecodeError, match=reason):
        decode_image(data, SQUASH)


def test_user_pixel_limit_wins_over_pils_own_threshold():
    # PIL's own warning threshold is 200 MP here; a job run with a higher --max-pixels decodes above it
    from image_jobs import decode

    data = huge_png(3000, 2000)  # 6 MP
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decode.Image, "MAX_IMAGE_PIXELS", 4_000_000)  # below the image, above half of it
        assert decode_image(data, SQUASH, max_pixels=10_000_000).width == 3000
    with pytest.raises(DecodeError, match="over the limit of 5000000"):
        decode_image(data, SQUASH, max_pixels=5_000_000)


def test_rejecting_a_400_megapixel_image_keeps_memory_bounded(tmp_path):
    """In a fresh interpreter (its peak memory is its own): the rejection costs no pixel buffer."""
    import subprocess
    import sys

    from project_paths import PROJECT_ROOT

    (tmp_path / "giant.png").write_bytes(giant_png(20000, 20000))
    script = (
        "import resource, sys\n"
        "from image_jobs.decode import DecodeError, ResizePolicy, decode_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_image(data, ResizePolicy(224, 1.0))\n"
        "except DecodeError as exc:\n"
        "    print('rejected:', exc)\n"
        "print('peak_kb', before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "giant.png")], check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(PROJECT_ROOT / "spark_jobs")}).stdout
    assert "rejected: too many pixels: image is 20000x20000" in out
    before_kb, after_kb = (int(v) for v in out.split("peak_kb")[1].split())
    assert after_kb - before_kb < 50_000  # decoding would need 400 MB (grayscale) to 1.2 GB (RGB)


def test_a_worker_out_of_memory_is_not_the_photos_fault(monkeypatch):
    """A MemoryError while decoding fails the task (Spark retries it): never a permanent reject."""
    from image_jobs import decode

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(decode, "_resize", exhausted)
    with pytest.raises(MemoryError):
        decode_image(jpeg_bytes((300, 200), (10, 200, 30)), SQUASH)
