"""Decode image bytes into model-ready RGB arrays, or a reason why not.

Every bad input becomes a ``DecodeError`` with a short human-readable reason, never an exception
escaping into Spark: one bad photo must not fail a job over thousands of good ones. A reason starts
with its kind in lower-case words ("too many pixels: image is ..."), which the job log and the report
count by (``extraction.reason_kind``).

Only what belongs to the file is a reason. A ``MemoryError`` (the worker short of memory, not the photo at
fault: the pixel guard below refuses the photos too large for any worker) propagates: the task fails and
Spark retries it, so the photo is never recorded as a permanent reject.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # a 50-megapixel photo decodes; a decompression bomb does not

# Ours, ``max_pixels`` checked on the header before any pixel is decoded, is the guard that counts.
# PIL's own error (above twice this value) stays on as a second line behind it.
Image.MAX_IMAGE_PIXELS = 4 * DEFAULT_MAX_PIXELS


class DecodeError(ValueError):
    """An image that cannot be used, with the reason recorded in the rejects table."""


@dataclass(frozen=True)
class ResizePolicy:
    """How an image becomes a ``size x size`` input.

    ``crop_fraction`` < 1 resizes the short side to ``size / crop_fraction`` then centre-crops
    (torchvision's 256 -> 224); ``crop_fraction`` == 1 squashes the whole image to ``size x size``.
    """

    size: int = 224
    crop_fraction: float = 1.0

    @property
    def short_side(self) -> int:
        return round(self.size / self.crop_fraction)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (size, size, 3), RGB
    width: int  # original size, after EXIF orientation
    height: int


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; alpha is composited on mid-grey, 16-bit is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(data: bytes, policy: ResizePolicy, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes (JPEG, PNG, GIF, BMP, TIFF, WebP...) into a resized RGB array.

    JPEGs are decoded at reduced scale with PIL's ``draft`` when the target is much smaller,
    which makes the decode several times cheaper. Raises DecodeError with the reason.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our limit (``max_pixels``, checked on the header just below) is the one that counts:
            # PIL's warning threshold is fixed, so it is not allowed to reject on its own terms.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only: no pixel is decoded yet
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"too many pixels: image is {width}x{height} = {width * height} pixels, "
                    f"over the limit of {max_pixels}"
                )
            if width < 2 or height < 2:
                raise DecodeError(f"too small to classify: image is {width}x{height}")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/TIFF: the first frame stands for the image
            if img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                # draft decodes at 1/2, 1/4 or 1/8 scale, keeping the result >= the requested size.
                # Asking for twice the target keeps a bilinear downscale after it (DCT scaling alone
                # visibly hurts accuracy) while still skipping most of the work on large photos.
                draft_side = 2 * policy.short_side
                img.draft("RGB" if img.mode != "L" else "L", (draft_side, draft_side))
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says: displayed rotated by 90 degrees
                width, height = height, width
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            img = _resize(img, policy)
            pixels = np.asarray(img, dtype=np.uint8)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"too many pixels (decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from None
    if pixels.shape != (policy.size, policy.size, 3):
        raise DecodeError(f"decoded to unexpected shape {pixels.shape}")
    return DecodedImage(pixels, width, height)


def _resize(img: Image.Image, policy: ResizePolicy) -> Image.Image:
    size = policy.size
    if policy.crop_fraction >= 1.0:
        return img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return img.resize((size, size), Image.BILINEAR, box=crop_box(*img.size, policy), reducing_gap=3.0)


def crop_box(width: int, height: int, policy: ResizePolicy) -> tuple[float, float, float, float]:
    """The region of a ``width x height`` image that torchvision's resize (short side to
    ``policy.short_side``) then centre crop (``policy.size``) keeps, in the image's own coordinates.

    Resizing just that region to ``size x size`` (PIL's ``box``) computes the same output pixels from
    the same source pixels (the filter still reads past the box's edges) without computing the border
    the crop would throw away (on a 224x224 photo, the upscale to 256x256: about half the resize's time).
    """
    size = policy.size
    scale = policy.short_side / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy
