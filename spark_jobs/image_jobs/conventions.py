"""What the Airflow side and the Spark jobs agree on, in one dependency-free module both import.

Standard library only: the Airflow side loads this file from the DAG processor (where neither Spark
nor numpy need be installed), the jobs import it from their zip on the cluster.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

# the backbones (``image_jobs.backbones.BACKBONES`` builds one per name, a test keeps the two equal) and what
# the trigger form says of each, the default first
BACKBONE_NOTES = {"mobilenet_v2": "1280-d, fast",
                  "efficientnet_lite2": "1280-d, a little more accurate, about 6x slower",
                  "vgg16": "4096-d fc2, as in the original study"}
BACKBONE_NAMES = tuple(sorted(BACKBONE_NOTES))
# the weights that are no file: Keras' cached ImageNet weights, and random initialisation (timing runs: the
# features mean nothing, and there is no exported OpenVINO model of them)
IMAGENET_WEIGHTS = "imagenet"
RANDOM_WEIGHTS = "random"


def is_weights_file(weights: str | None) -> bool:
    """Whether ``weights`` names a file to ship or stage (not None, ``imagenet`` or ``random``)."""
    return weights not in (None, "", IMAGENET_WEIGHTS, RANDOM_WEIGHTS)
# the backbones whose real ImageNet weights 'make weights' converts offline, and the file names it writes
# (under <root>/weights/: the run's default weights for that backbone)
PREPARED_WEIGHTS = {"mobilenet_v2": "mobilenet_v2_imagenet.keras",
                    "efficientnet_lite2": "efficientnet_lite2_imagenet.keras"}
# the CNN forward pass: the runtime that runs the Keras model (exported to OpenVINO IR for "openvino"),
# and its numeric precision ("auto": bf16 where the CPU has it, else fp32; tensorflow runs fp32 only)
RUNTIMES = ("tensorflow", "openvino")
PRECISIONS = ("fp32", "bf16", "auto")
# openvino gives TensorFlow's features (fp32, within 1e-5) about twice as fast, and its Python workers
# import no TensorFlow; random weights (timing runs) have no exported model, so they run on tensorflow
DEFAULT_RUNTIME = "openvino"
RANDOM_WEIGHTS_RUNTIME = "tensorflow"


def default_runtime(random_weights: bool) -> str:
    """The runtime when none is asked for: openvino, or tensorflow for random weights (nothing to export)."""
    return RANDOM_WEIGHTS_RUNTIME if random_weights else DEFAULT_RUNTIME


def runtime_lacks_weights(runtime: str | None, weights: str | None) -> bool:
    """Whether ``runtime`` cannot run ``weights``: openvino runs exported weights, random ones have none."""
    return runtime == "openvino" and weights == RANDOM_WEIGHTS


# a weights file's OpenVINO IRs are folders beside it: <weights stem>.openvino-<key>/ (inference.ir_path)
IR_FOLDER_SUFFIX = ".openvino-"


def ir_folder_glob(weights_name: str) -> str:
    """The glob matching every exported IR folder of the weights file named ``weights_name``."""
    return f"{weights_name.split('.', 1)[0]}{IR_FOLDER_SUFFIX}*"
PAIR_MODES = ("all_pairs", "one_vs_each", "one_vs_rest")
# the most classes a run may have: the plan refuses more, naming the param. The class list travels to the jobs
# in a file (--labels-uri), so it is bounded by the report and the pairwise sweep (all_pairs fits
# n (n - 1) / 2 pairs), not by the 10,240 characters of EMR's step arguments
MAX_CLASSES = 1000
DEFAULT_SPLIT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# what the extraction job reads (Spark's pathGlobFilter, case-insensitive) and the listings count
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
IMAGE_SUFFIXES = tuple(f".{extension}" for extension in IMAGE_EXTENSIONS)
# photos read at once by each featurizing or scoring task (S3 answers a small GET in tens of milliseconds:
# one read at a time leaves the CPU waiting). At 50 ms a request, 16 reads bring about 150 photos/s to a task,
# no more than the fp32 model takes and less than bf16 does; 32 bring about 230 (docs/benchmarks.md)
DEFAULT_READ_CONCURRENCY = 32


def hidden_to_spark(name: str) -> bool:
    """Whether a file or folder of this name is hidden (Hadoop's rule, which Spark's file sources apply).

    The rule of Spark's ``HadoopFSUtils.shouldFilterOutPathName``: names starting with '.', names starting
    with '_' unless they contain '=', and half-copied ``._COPYING_`` files. The jobs' listing and the plan's
    both leave such files out, so a run never sees what the plan did not count.
    """
    excluded = (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")
    return excluded and not name.startswith(("_common_metadata", "_metadata"))


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions (any case)."""
    return name.lower().endswith(IMAGE_SUFFIXES)


# a photo's identity: its path, size and modification time (a rewritten file is a new photo). The columns of
# the feature, reject and prediction datasets, and of predictions.csv (where the plan reads them back)
PHOTO_KEY = ("path", "length", "modificationTime")
PHOTO_KEY_CSV = ("path", "length", "modification_time")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/*")


def photo_key(path: str, length: int | str, mtime: datetime | None) -> tuple[str, int, int | None]:
    """A photo's identity across listings: path without scheme (Spark says ``file:/x`` or ``s3://b/k``,
    object storage ``/x`` or ``b/k``), size, modification time in whole seconds."""
    return _SCHEME.sub("", path).lstrip("/"), int(length), int(mtime.timestamp()) if mtime else None
# metrics.csv: the original study's columns first (its users compare with them), then this product's
STUDY_COLUMNS = ("class_1", "class_2", "split", "iteration", "num_model", "predict_pct", "nb_train", "nb_test",
                 "nb_correct")
METRICS_COLUMNS = (*STUDY_COLUMNS, "model_type", "fit_seconds", "best_of_pair")
# the multiclass model's model.json (train_models writes it, predictions read it). /2: the PCA may be
# absent (``pca_components`` null) and ``answer_threshold`` holds the "not sure" threshold; /1 files
# (always a PCA, no threshold) are still read, with threshold 0
MODEL_FORMAT = "image-pipeline-multiclass/2"
MODEL_FORMATS_READ = ("image-pipeline-multiclass/1", MODEL_FORMAT)


def min_images_for_fraction(fraction: float) -> int:
    """Fewest images a class needs so a ``fraction`` split leaves at least one image on each side."""
    return max(2, math.ceil(1 / min(fraction, 1 - fraction) - 1e-9))


def min_images_per_class(split_ratios, test_fraction: float) -> int:
    """Fewest images a class needs so every train/test split and the test hold-out have both sides."""
    return max(min_images_for_fraction(f) for f in [*split_ratios, test_fraction])


# CSV cells a spreadsheet would run as a formula start with one of these (OWASP, "CSV Injection"); every text
# cell the product writes that starts with one of them, or with the quote itself, gets a leading "'": the
# spreadsheet shows the text, and ``csv_cell_value`` gives the exact value back (one quote removed)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_TEXT_QUOTE = "'"
CSV_ESCAPED_START = "^[=+\\-@\t\r']"  # the same starts (and the quote), as a Java regular expression


def csv_cell(text: str | None) -> str | None:
    """A text value as the product writes it into a CSV cell: neutralised when a spreadsheet would run it."""
    if text and text.startswith((*FORMULA_STARTS, CSV_TEXT_QUOTE)):
        return CSV_TEXT_QUOTE + text
    return text


def csv_cell_value(cell: str | None) -> str | None:
    """The exact value of a text cell the product wrote (``csv_cell`` undone)."""
    return cell[1:] if cell and cell.startswith(CSV_TEXT_QUOTE) else cell


def model_sha256(data: bytes) -> str:
    """A model.json's identity: the SHA-256 of its bytes, in hex (latest.json records it when the model is
    published; the scoring job and the prediction command check it and name it in every prediction)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def model_changed(uri: str, digest: str, expected: str | None) -> str | None:
    """Why a model file cannot be used when its digest is not the published one (None when it is, or when
    nothing was published to compare with)."""
    if not expected or digest == expected:
        return None
    return (f"{uri} has SHA-256 {digest}, not the {expected} it was published with: the file changed after its "
            "quality gate; publish the run again (or train a new one)")
