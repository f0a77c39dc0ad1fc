# Quick start: `make app` runs the explorer, `make test` runs every check. Both set up .venv first.
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: app test setup

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv .venv
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f .venv/.installed-* && touch $@

# glibc: blocks from 256 KiB up are their own mappings (returned when freed), 2 heaps (bnviz.hosting.serve)
app: setup
	MALLOC_MMAP_THRESHOLD_=262144 MALLOC_ARENA_MAX=2 $(PY) -m streamlit run app.py

test: setup
	bash scripts/test.sh
