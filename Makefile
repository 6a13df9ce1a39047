# make demo  - set up .venv (first time) and run the reference scenario
# make test  - set up .venv (first time) and run the test suite
# make bench - set up .venv and run the benchmarks (figures in bench/results/)
# make clients - the real clients the front-end tests drive (apt, as root; quick when present)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# fio (nbd engine), qemu-img/qemu-io, nbdcopy/nbdinfo, the libnbd Python binding,
# nbdkit, FUSE 3 (mfusepy loads its libfuse3 with ctypes: nothing to build),
# mkfs.ext4/e2fsck/debugfs, losetup
CLIENT_DEBS := fio qemu-utils libnbd-bin python3-libnbd nbdkit fuse3 e2fsprogs util-linux

.PHONY: demo test bench soak clean setup clients

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "import firmware.raid.parity as p; p.warm_up()"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emu run configs/two-site.toml scenarios/demo.emu

clients:
	@missing=$$(for p in $(CLIENT_DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "make clients: all present"; \
	elif [ "$$(id -u)" != 0 ]; then \
	    echo "make clients: not root; missing $$missing (their tests will skip): sudo make clients" >&2; \
	else \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(STAMP) clients
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

soak: $(STAMP)
	EMU_SOAK_SEEDS=200 $(PY) -m pytest tests/e2e/test_campaign.py

clean:
	rm -rf $(VENV) build *.egg-info bench/results
