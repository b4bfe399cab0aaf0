# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv when it is
# missing and install the package into it (torch/torchvision pinned by constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Idle OpenMP threads sleep instead of spinning: with two pytest-xdist workers (and notebook
# kernels) sharing two cores, spinning threads were measured to make a step ~15x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test demo lab clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# Parity with the reference runs in its own process with two threads (tests/parity/conftest.py);
# everything else runs on two pytest-xdist workers, whole files per worker (a notebook's cells share
# one kernel). Both parts always run; either failing fails.
test: $(STAMP)
	@$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) --ignore=tests/parity tests \
		$(if $(wildcard notebooks/*.ipynb),--nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks,); a=$$?; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/parity; b=$$?; \
	test $$a -eq 0 -a $$b -eq 0

demo: $(STAMP)
	$(BIN)/python -m workbench.demo --output-dir output

lab: $(STAMP)
	$(BIN)/python -m pip install -c constraints.txt -e '.[test,jupyter]'
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) output .pytest_cache
