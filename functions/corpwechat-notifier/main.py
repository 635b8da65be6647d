"""Entry for ``functions-framework --target handle``."""

from corpwechat_notifier.app import build
from corpwechat_notifier.shared.boundary import functions_framework_target

handle = functions_framework_target(build())
