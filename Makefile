# Two commands do all set-up on a fresh machine:
#   make demo   install into .venv and run the CPU demo (ESPO on 4x4 Sudoku, tiny model, ~5 minutes on 2 cores)
#   make test   install into .venv and run the linter and the test suite
# On machines with a local CPU torch wheel folder in PIP_FIND_LINKS it is used; elsewhere the torch pin
# in constraints.txt resolves from the package index (GPU users may pre-install the CUDA build they want).

PYTHON ?= python3
VENV ?= .venv
FIND_LINKS := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: install demo test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python $(FIND_LINKS) -c constraints.txt \
		--compile-bytecode -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/espo fit --config configs/demo.yaml

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q --durations=15
