"""Files that look like images but are not usable, and unusual images that are, for the tests."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(size=(64, 48), color=(200, 30, 30), mode="RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="JPEG", **save)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def noisy_rgb(size=(80, 60), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# Class folder names a user may well create, and some a shell would execute (none may ever reach one).
# Spark and the plan both read them literally: spaces, accents, CJK, quotes, '..' inside a name,
# Hadoop glob characters, a percent escape, a colon, command substitution, ';', a Jinja template.
HOSTILE_LABELS = [
    "chat noir é",
    "柴犬",
    "it's \"quoted\"",
    "a..b",
    "$(touch pwned)",
    "a;rm -rf x",
    "50%20off",
    "ratio 1:2",
    "{{ 7*7 }} [x]*?",
    "-x",  # looks like an option to a command line parser
    "--pair-mode",
]


# name -> bytes of files that must be rejected
def rejected_files() -> dict[str, bytes]:
    good = jpeg_bytes((120, 90))
    return {
        "zero_bytes.jpg": b"",
        "text_named.jpg": b"this is a text file, not a photo\n" * 10,
        "truncated.jpg": good[: len(good) // 2],
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "one_pixel.png": png_bytes(Image.new("RGB", (1, 1), (1, 2, 3))),
    }


# name -> bytes of unusual but valid images that must be featurized
def accepted_unusual_files() -> dict[str, bytes]:
    cmyk = io.BytesIO()
    Image.new("CMYK", (70, 50), (0, 120, 200, 10)).save(cmyk, format="JPEG")
    sixteen = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    palette = noisy_rgb().convert("P", palette=Image.ADAPTIVE, colors=16)
    rgba = noisy_rgb().convert("RGBA")
    rgba.putalpha(128)
    gif = io.BytesIO()
    frames = [Image.new("P", (40, 30), i * 40) for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "cmyk.jpg": cmyk.getvalue(),
        "sixteen_bit.png": png_bytes(sixteen),
        "palette.png": png_bytes(palette),
        "alpha.png": png_bytes(rgba),
        "grayscale.jpg": jpeg_bytes((50, 70), 128, mode="L"),
        "animated.gif": gif.getvalue(),
    }


def huge_png(width: int, height: int) -> bytes:
    """A solid PNG with a large pixel count but a small file (compresses to almost nothing)."""
    return png_bytes(Image.new("L", (width, height), 0))


@lru_cache(maxsize=4)
def giant_png(width: int, height: int) -> bytes:
    """A valid black grayscale PNG of ``width x height`` written row by row, never held as pixels.

    20000 x 20000 (400 MP, 400 MB once decoded) is about 390 KB on disk: deflate packs the zero rows
    about 1000:1. PIL would build the same file only after allocating the whole image.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then one zero byte per pixel
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def animated_gif(colours=((255, 0, 0), (0, 255, 0), (0, 0, 255)), size=(40, 30)) -> bytes:
    """An animated GIF with one solid frame per colour."""
    frames = [Image.new("RGB", size, colour) for colour in colours]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        out.append(path)
    return out
