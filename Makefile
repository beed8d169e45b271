# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_EVENTS ?= 1000000
DATA ?= paymetrics-data

.PHONY: demo test lint typecheck bench clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/paymetrics demo --events $(DEMO_EVENTS) --data-dir $(DATA)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks azure_function
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/paymetrics bench --events 1000000

docs: $(STAMP)  ## regenerate the option reference in docs/configuration.md
	sed -n '1,/^<!-- BEGIN GENERATED/p' docs/configuration.md | sed '$$d' > docs/.configuration.md
	$(BIN)/paymetrics config docs >> docs/.configuration.md
	mv docs/.configuration.md docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks azure_function
	$(BIN)/ruff format --check src tests benchmarks azure_function

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
