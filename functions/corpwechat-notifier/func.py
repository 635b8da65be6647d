"""Entry for ``python -m parliament .`` (func deploy)."""

from corpwechat_notifier.app import build
from corpwechat_notifier.shared.boundary import parliament_main

main = parliament_main(build())
