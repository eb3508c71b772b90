import zipfile

from image_pipeline.compute.jobs_archive import build_jobs_zip, content_hash


def test_jobs_zip_is_reproducible_and_holds_the_library(tmp_path):
    a = build_jobs_zip(tmp_path / "a")
    b = build_jobs_zip(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    assert content_hash(a) == content_hash(b)
    names = zipfile.ZipFile(a).namelist()
    assert "image_jobs/__init__.py" in names and "image_jobs/featurize.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
