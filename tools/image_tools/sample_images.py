"""Photo-like sample images, one folder per class, for the demo and the tests.

Each class has its own shape, colour and texture; every image varies position, scale, rotation,
background, lighting, noise and size (not all 224x224). Most files are JPEG, some PNG, some
grayscale. The output is a pure function of the arguments: same seed, same bytes.

Command: ``python -m image_tools.sample_images --out data/images --classes 6 --per-class 40 --seed 0``
"""

from __future__ import annotations

import argparse
import colorsys
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

# Names of the original study's pet breeds, so the demo reads like the real thing.
CLASS_NAMES = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier",
    "wheaten_terrier", "yorkshire_terrier",
)
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent")
TEXTURES = ("plain", "stripes", "dots", "checker", "rings")


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks: what a CNN should learn to tell apart."""

    name: str
    shape: str
    hue: float
    texture: str


def class_styles(n_classes: int) -> list[ClassStyle]:
    """The first ``n_classes`` classes with distinct shape/colour/texture combinations."""
    if not 1 <= n_classes <= len(CLASS_NAMES):
        raise ValueError(f"--classes must be between 1 and {len(CLASS_NAMES)}, got {n_classes}")
    styles = []
    for i in range(n_classes):
        styles.append(
            ClassStyle(
                name=CLASS_NAMES[i],
                shape=SHAPES[i % len(SHAPES)],
                # golden-ratio hue steps keep neighbouring classes far apart in colour
                hue=(i * 0.618034) % 1.0,
                texture=TEXTURES[(i // len(SHAPES) + i) % len(TEXTURES)],
            )
        )
    return styles


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _polygon(n: int, radius: float, inner: float | None = None) -> list[tuple[float, float]]:
    points = []
    steps = n * 2 if inner is not None else n
    for k in range(steps):
        r = radius if inner is None or k % 2 == 0 else inner
        a = 2 * math.pi * k / steps - math.pi / 2
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _shape_mask(shape: str, size: int) -> Image.Image:
    """A white-on-black mask of the class shape, centred in a size x size square."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    c, r = size / 2, size * 0.45

    def poly(points):
        d.polygon([(c + x, c + y) for x, y in points], fill=255)

    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "square":
        d.rectangle([c - r * 0.8, c - r * 0.8, c + r * 0.8, c + r * 0.8], fill=255)
    elif shape == "triangle":
        poly(_polygon(3, r))
    elif shape == "star":
        poly(_polygon(5, r, r * 0.42))
    elif shape == "cross":
        w = r * 0.35
        d.rectangle([c - r, c - w, c + r, c + w], fill=255)
        d.rectangle([c - w, c - r, c + w, c + r], fill=255)
    elif shape == "ring":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        d.ellipse([c - r * 0.55, c - r * 0.55, c + r * 0.55, c + r * 0.55], fill=0)
    elif shape == "hexagon":
        poly(_polygon(6, r))
    elif shape == "crescent":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        d.ellipse([c - r * 0.5, c - r * 1.05, c + r * 1.3, c + r * 0.75], fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _texture(style: ClassStyle, size: int, rng: np.random.Generator) -> Image.Image:
    """The object's surface: the class colour with its texture, jittered per image."""
    hue = style.hue + rng.normal(0, 0.02)
    base = np.array(_rgb(hue, 0.75 + rng.uniform(-0.1, 0.1), 0.85), dtype=np.float32)
    alt = np.array(_rgb(hue + 0.5, 0.6, 0.35 + rng.uniform(-0.1, 0.1)), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / rng.uniform(5, 9)
    phase = rng.uniform(0, period)
    if style.texture == "plain":
        pattern = np.zeros((size, size), np.float32)
    elif style.texture == "stripes":
        pattern = ((xx + yy + phase) // (period / 2) % 2).astype(np.float32)
    elif style.texture == "dots":
        pattern = (((xx + phase) % period - period / 2) ** 2 + ((yy + phase) % period - period / 2) ** 2
                   < (period / 4) ** 2).astype(np.float32)
    elif style.texture == "checker":
        pattern = (((xx + phase) // (period / 2) + (yy + phase) // (period / 2)) % 2).astype(np.float32)
    else:  # rings
        rr = np.hypot(xx - size / 2, yy - size / 2)
        pattern = ((rr + phase) // (period / 2) % 2).astype(np.float32)
    pixels = base * (1 - pattern[..., None]) + alt * pattern[..., None]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A muted gradient with blotches: clutter the classifier has to ignore."""
    c1 = np.array(_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.95)), np.float32)
    c2 = np.array(_rgb(rng.uniform(), rng.uniform(0, 0.35), rng.uniform(0.3, 0.95)), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = Image.fromarray((c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.2) * min(width, height)
        grey = int(rng.uniform(60, 200))
        d.ellipse([x - r, y - r, x + r, y + r], fill=(grey, grey, grey))
    return img.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 60))


def render_image(style: ClassStyle, rng: np.random.Generator) -> Image.Image:
    """One photo-like RGB image of ``style``'s object on a random background."""
    width, height = int(rng.integers(160, 480)), int(rng.integers(160, 480))
    img = _background(width, height, rng)
    obj_size = int(min(width, height) * rng.uniform(0.45, 0.8))
    mask = _shape_mask(style.shape, obj_size)
    surface = _texture(style, obj_size, rng)
    angle = float(rng.uniform(0, 360))
    mask = mask.rotate(angle, resample=Image.BILINEAR)
    surface = surface.rotate(angle, resample=Image.BILINEAR)
    x = int(rng.integers(0, width - obj_size + 1))
    y = int(rng.integers(0, height - obj_size + 1))
    img.paste(surface, (x, y), mask.filter(ImageFilter.GaussianBlur(1)))
    pixels = np.asarray(img, dtype=np.float32)
    pixels = pixels * rng.uniform(0.75, 1.2) + rng.normal(0, rng.uniform(2, 10), pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def write_sample_images(out: Path, n_classes: int, per_class: int, seed: int) -> list[Path]:
    """Write ``per_class`` images for each of ``n_classes`` classes under ``out/<label>/``.

    About 20% are PNG and about 10% grayscale; the rest are RGB JPEG. Returns the written paths.
    Existing files with the same names are overwritten with identical bytes (same seed).
    """
    if per_class < 1:
        raise ValueError(f"--per-class must be at least 1, got {per_class}")
    written = []
    for class_index, style in enumerate(class_styles(n_classes)):
        folder = out / style.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, class_index, i])
            img = render_image(style, rng)
            if rng.uniform() < 0.1:
                img = img.convert("L")
            if rng.uniform() < 0.2:
                path = folder / f"{style.name}_{i:04d}.png"
                img.save(path, format="PNG")
            else:
                path = folder / f"{style.name}_{i:04d}.jpg"
                img.save(path, format="JPEG", quality=int(rng.integers(70, 95)))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write <label>/ folders into")
    parser.add_argument("--classes", type=int, default=6, help="number of classes (1-37)")
    parser.add_argument("--per-class", type=int, default=40, help="images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        paths = write_sample_images(args.out, args.classes, args.per_class, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    log.info("wrote %d images in %d class folders under %s", len(paths), args.classes, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
