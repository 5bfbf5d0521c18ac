# Two commands do all set-up:  `make demo` (train and score the demo grid) and `make test`.
# Both create .venv on first use: torch==2.13.0 first (a CPU build where one is on disk), then the
# project, so nothing later can pull a newer torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint paper

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m ablations.run ablations/grids/demo.yaml

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# The paper from results alone: make paper GRIDS="results/demo results/architecture_cpu"
GRIDS ?= results/demo
paper: setup
	$(BIN)/python -m paper.build $(GRIDS) --out paper $(if $(shell command -v latexmk),--pdf,)
	@command -v latexmk >/dev/null || echo "latexmk not found: tables and figures are in paper/; to build the PDF: sudo apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended lmodern latexmk"
