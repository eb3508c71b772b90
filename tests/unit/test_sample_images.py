import hashlib

import numpy as np
import pytest
from PIL import Image

from image_tools.sample_images import CLASS_NAMES, class_styles, main, write_sample_images


def _digest(paths):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(paths))).hexdigest()


def test_one_folder_per_class_with_mixed_formats_and_sizes(tmp_path):
    paths = write_sample_images(tmp_path, n_classes=4, per_class=25, seed=1)
    assert len(paths) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CLASS_NAMES[:4])
    formats, modes, sizes = set(), set(), set()
    for p in paths:
        with Image.open(p) as img:
            formats.add(img.format)
            modes.add(img.mode)
            sizes.add(img.size)
    assert formats == {"JPEG", "PNG"}
    assert modes == {"RGB", "L"}
    assert len(sizes) > 50 and (224, 224) not in sizes
    jpeg_share = sum(p.suffix == ".jpg" for p in paths) / len(paths)
    assert 0.6 < jpeg_share < 0.95


def test_deterministic_for_a_seed(tmp_path):
    a = write_sample_images(tmp_path / "a", 3, 5, seed=7)
    b = write_sample_images(tmp_path / "b", 3, 5, seed=7)
    c = write_sample_images(tmp_path / "c", 3, 5, seed=8)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_classes_differ_more_than_images_within_a_class(tmp_path):
    # mean colour of the object differs across classes: a crude check that classes are learnable
    write_sample_images(tmp_path, 3, 12, seed=0)
    means = {}
    for folder in tmp_path.iterdir():
        hists = []
        for p in folder.iterdir():
            hsv = np.asarray(Image.open(p).convert("RGB").convert("HSV"), dtype=np.float32)
            saturated = hsv[..., 1] > 120
            hists.append(np.histogram(hsv[..., 0][saturated], bins=12, range=(0, 256))[0] / max(saturated.sum(), 1))
        means[folder.name] = np.mean(hists, axis=0)
    names = sorted(means)
    between = min(np.abs(means[a] - means[b]).sum() for a in names for b in names if a < b)
    assert between > 0.3


def test_styles_are_distinct_and_bad_arguments_fail():
    styles = class_styles(37)
    assert len({(s.shape, s.texture, round(s.hue, 3)) for s in styles}) == 37
    with pytest.raises(ValueError, match="--classes"):
        class_styles(0)
    with pytest.raises(SystemExit):
        main(["--out", "/tmp/unused", "--classes", "99"])
