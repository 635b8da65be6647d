"""Entry for ``functions-framework --target handle``."""

from corpwechat_callback.app import build
from corpwechat_callback.shared.boundary import functions_framework_target

handle = functions_framework_target(build())
