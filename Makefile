# Every target creates .venv and installs what it needs, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: demo test lint format bench results docs install clean litert-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,beam,litert]"
	# musicnn is installed only for its checkpoints: its pinned dependencies would try to build numpy 1.16 from source.
	$(PY) -m pip install --quiet --no-deps musicnn==0.1.0
	# librosa's numba kernels compiled once into their on-disk cache (half a minute), as pip compiles bytecode:
	# every later process, test workers and extraction workers alike, loads them instead of compiling its own.
	$(PY) -c "from genre_tf.extract.pool import compile_kernels; compile_kernels()"
	touch $(STAMP)

install: $(STAMP)

# The three model families on synthetic demo audio, then the comparison table (a few minutes on 2 cores).
demo: $(STAMP)
	$(PY) -m genre_tf.prepare --config configs/demo.yaml
	$(PY) -m genre_tf.train --config configs/demo.yaml
	$(PY) -m genre_tf.train --config configs/demo_cnn.yaml
	$(PY) -m genre_tf.train --config configs/demo_resnet.yaml
	$(PY) -m genre_tf.compare saved_models/demo_mlp saved_models/demo_cnn saved_models/demo_resnet --output saved_models/demo_comparison

# One pytest worker per core (at most 4), a test file per worker: its module fixtures are built once.
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# A venv that predicts and serves an exported .tflite file on LiteRT and holds nothing of the training stack (no
# TensorFlow, Keras, pandas or librosa): python -m genre_tf.predict --model X.tflite FOLDER and
# python -m genre_tf.serve --model X.tflite run in it (the service's web stack: fastapi, uvicorn, httptools, uvloop,
# python-multipart).
litert-venv:
	$(PYTHON) -m venv .venv-litert
	.venv-litert/bin/python -m pip install --quiet --upgrade pip
	.venv-litert/bin/python -m pip install --quiet ai-edge-litert numpy soundfile soxr "fastapi>=0.165" "uvicorn>=0.30" "httptools>=0.6" "uvloop>=0.19" "python-multipart>=0.0.18"
	.venv-litert/bin/python -m pip install --quiet --no-deps -e .

# ruff, and the layer contract of pyproject.toml's [tool.importlinter] (lower layers never import upper ones).
lint: $(STAMP)
	$(VENV)/bin/ruff check genre_tf tests bench
	$(VENV)/bin/ruff format --check genre_tf tests bench
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix genre_tf tests bench
	$(VENV)/bin/ruff format genre_tf tests bench

bench: $(STAMP)
	$(PY) bench/features.py
	$(PY) bench/transfer.py
	$(PY) bench/musicnn_speed.py

# Every number of the README's Results section, from ../shared/data (about 6 hours on 2 cores; resumable).
results: $(STAMP)
	$(PY) bench/results.py

# The documentation site into site/: the pages of docs/, the API reference from the docstrings (read, not imported),
# the Results and Benchmarks tables from bench/results/. --strict: a broken link, anchor or included file fails it.
# The two variables quiet a notice some plugins print about a future MkDocs 2; the docs extra keeps mkdocs below 2.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

clean:
	rm -rf data/cache data/demo saved_models/*/
