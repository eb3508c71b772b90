import pickle

import numpy as np
import pytest

from image_tools.checkpoint_reader import CheckpointFormatError, load_legacy_state_dict
from image_tools.weights import default_checkpoint_path


def test_reads_torchvision_checkpoint_without_torch():
    state = load_legacy_state_dict(default_checkpoint_path())
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 262
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.0.weight"].dtype == np.float32
    var = state["features.18.1.running_var"]
    assert (var > 0).all() and np.isfinite(var).all()
    assert np.abs(state["classifier.1.weight"]).max() < 10


def test_rejects_other_files(tmp_path):
    zipped = tmp_path / "new_format.pth"
    zipped.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(CheckpointFormatError, match="zip-format"):
        load_legacy_state_dict(zipped)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(pickle.dumps("hello") + pickle.dumps(3) + pickle.dumps({}))
    with pytest.raises(CheckpointFormatError, match="unexpected magic"):
        load_legacy_state_dict(junk)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="not a torch checkpoint"):
        load_legacy_state_dict(text)


def test_truncated_checkpoint_fails(tmp_path):
    data = default_checkpoint_path().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        load_legacy_state_dict(cut)
