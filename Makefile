# Every target creates .venv and installs what it needs, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m genre_tf.prepare --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check genre_tf tests bench
	$(VENV)/bin/ruff format --check genre_tf tests bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix genre_tf tests bench
	$(VENV)/bin/ruff format genre_tf tests bench

bench: $(STAMP)
	$(PY) bench/features.py

clean:
	rm -rf data/cache data/demo saved_models/*/
