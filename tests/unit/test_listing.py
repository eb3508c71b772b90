"""The driver-side part of the extraction's listing: labels from folders, rejects before any byte is read."""

from __future__ import annotations

import pytest

from image_jobs.extraction import NO_CLASS_FOLDER, ListedImage, label_of, precheck_reason, size_reason, split_readable


@pytest.mark.parametrize("path,label", [
    ("file:/data/images/beagle/1.jpg", "beagle"),
    ("file:/data/images/beagle/sub/deeper/2.jpg", "beagle"),  # nested sub-folders keep their class
    ("file:/data/images/loose.jpg", None),  # directly under the root: no class
    ("file:/data/images/chat noir é 柴犬/3.png", "chat noir é 柴犬"),
    ("file:/data/images/$(touch pwned) `x`/4.jpg", "$(touch pwned) `x`"),
    ("file:/data/images/a..b/5.jpg", "a..b"),
    ("file:/data/images2/beagle/6.jpg", None),  # a sibling folder sharing the root's prefix
    ("file:/elsewhere/beagle/7.jpg", None),
])
def test_the_label_is_the_first_folder_under_the_root(path, label):
    assert label_of(path, "file:/data/images") == label
    assert label_of(path, "file:/data/images/") == label


def test_object_store_paths():
    assert label_of("s3://bucket/pets/images/pug/a.jpg", "s3://bucket/pets/images") == "pug"
    assert label_of("s3://bucket/pets/images/a.jpg", "s3://bucket/pets/images") is None


@pytest.mark.parametrize("label,length,reason", [
    ("pug", 1000, None),
    (None, 1000, NO_CLASS_FOLDER),
    ("pug", 0, "empty file (0 bytes)"),
    ("pug", 5001, "file too large: 5001 bytes, over the limit of 5000"),
    ("pug", 5000, None),
])
def test_rejects_decided_before_reading(label, length, reason):
    assert precheck_reason(label, length, max_bytes=5000) == reason


def test_listed_images_split_into_read_and_rejected_in_order():
    images = [ListedImage("file:/i/pug/a.jpg", 10, 1, "pug"), ListedImage("file:/i/b.jpg", 10, 2),
              ListedImage("file:/i/pug/c.jpg", 0, 3, "pug"), ListedImage("file:/i/pug/d.jpg", 20, 4, "pug")]
    to_read, rejected = split_readable(images, lambda image: precheck_reason(image.label, image.length, 15))
    assert to_read == [images[0]]
    assert rejected == [(images[1], NO_CLASS_FOLDER), (images[2], "empty file (0 bytes)"),
                        (images[3], "file too large: 20 bytes, over the limit of 15")]
    # scoring has no classes: only the size decides
    to_read, rejected = split_readable(images, lambda image: size_reason(image.length, 15))
    assert to_read == images[:2] and [image for image, _ in rejected] == images[2:]
