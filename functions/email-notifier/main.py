"""Entry for ``functions-framework --target handle``."""

from email_notifier.app import build
from email_notifier.shared.boundary import functions_framework_target

handle = functions_framework_target(build())
