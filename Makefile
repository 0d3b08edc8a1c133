# `make demo` and `make test` create the environment when it is missing.
PYTHON_VERSION ?= 3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.protobench-installed
UV := $(shell command -v uv 2>/dev/null)
# the demo writes only under DEMO_DIR (git-ignored): never the committed boards
DEMO_DIR ?= runs/demo
DEMO_STORE := $(DEMO_DIR)/results.sqlite
# `make boards BOARDS_ARGS="--dry-run"` lists the commands; `--parts continual-digits` runs one part
BOARDS_ARGS ?=

.PHONY: install demo boards test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml uv.lock scripts/install_learn2learn.sh
ifeq ($(UV),)
	python3 -m pip install --quiet uv
endif
	uv sync --python $(PYTHON_VERSION) --all-extras --locked --inexact
	bash scripts/install_learn2learn.sh
	touch $(STAMP)

demo: install
	$(BIN)/protobench sweep benchmarks/grids/digits-demo-fewshot.yaml --store $(DEMO_STORE)
	$(BIN)/protobench sweep benchmarks/grids/digits-demo-continual.yaml --store $(DEMO_STORE)
	$(BIN)/protobench leaderboard show fewshot/digits --store $(DEMO_STORE) --aggregate
	$(BIN)/protobench leaderboard export --store $(DEMO_STORE) --out $(DEMO_DIR)/leaderboards
	$(BIN)/protobench leaderboard site --store $(DEMO_STORE) --out $(DEMO_DIR)/site
	$(BIN)/protobench compare fewshot/digits ncm protonet --store $(DEMO_STORE)
	$(BIN)/protobench compare continual/digits prd finetune --store $(DEMO_STORE)

# regenerates leaderboards/ (results.sqlite, *.md, *.csv, site/) on purpose, into a fresh store,
# from the committed grids listed in benchmarks/boards.py (about 3 h on 2 CPU cores)
boards: install
	$(BIN)/python -m benchmarks.boards $(BOARDS_ARGS)

# the import contracts (layers, no cycles; pyproject.toml [tool.importlinter]) come first;
# the tests run on two workers (pytest-xdist), each test file on one of them
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check protobench tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
