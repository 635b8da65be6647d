"""Entry for ``functions-framework --target handle``."""

from enricher.app import build
from enricher.shared.boundary import functions_framework_target

handle = functions_framework_target(build())
