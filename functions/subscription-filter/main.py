"""Entry for ``functions-framework --target handle``."""

from subscription_filter.app import build
from subscription_filter.shared.boundary import functions_framework_target

handle = functions_framework_target(build())
