# Developer shortcuts. The test entry point is scripts/test.sh (see README).
PYTHON ?= .venv/bin/python

.PHONY: crds check-crds

# Generate the CRD from the typed spec (operator/bem_operator/builders/spec_types.py) into
# crds/, the Helm chart and manifests/, and the runtime contract the operator reads.
crds:
	$(PYTHON) scripts/gen_crds.py

# Fail with a diff when a generated file is stale (what the unit test checks).
check-crds:
	$(PYTHON) scripts/gen_crds.py --check
