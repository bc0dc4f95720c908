# Developer shortcuts. The test entry point is scripts/test.sh (see README).
PYTHON ?= .venv/bin/python

.PHONY: sync-crd check-crd

# Copy crds/bemservice.yaml (the single source) into the Helm chart and manifests/.
sync-crd:
	$(PYTHON) scripts/sync_crd.py

# Fail when a CRD copy is stale (what CI and the consistency test check).
check-crd:
	$(PYTHON) scripts/sync_crd.py --check
