# noisystudent: set up, run the demo, run the tests. Everything lives in .venv.
#
#   make demo     create .venv if missing, install, run the embedded digits demo
#   make test     create .venv if missing, install, run the test suite
#
# TORCH is what pip installs first, before anything that depends on torch. The default is the
# CPU build this project's machines carry (a bare `torch` from PyPI pulls GBs of CUDA packages).
# GPU users override it, e.g.  make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu124"
# or TORCH=torch for PyPI's default CUDA build.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test fashion-mnist-data clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test,plots,onnx]"
	touch $(STAMP)

demo: install
	$(BIN)/noisystudent run

test: install
	$(BIN)/python -m pytest -q

# Fashion-MNIST IDX files from Debian's package (root, Debian/Ubuntu); nothing is downloaded at run time.
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
fashion-mnist-data:
	test -f $(FASHION_DIR)/train-images-idx3-ubyte.gz || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }

clean:
	rm -rf $(VENV) build *.egg-info
