"""Typed view of a BEMService spec with the CRD's defaults applied (lives with the builders)."""

from bem_operator.builders.fields import DEFAULTS, SpecError
from bem_operator.builders.spec import parse_bemservice
from bem_operator.builders.spec_types import BEMServiceSpec

__all__ = ["DEFAULTS", "BEMServiceSpec", "SpecError", "parse_bemservice"]
