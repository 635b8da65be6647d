"""Entry for ``python -m parliament .`` (func deploy). parliament does not fork, so the
subscription watch starts at once (its own health endpoints do not ask the function)."""

from subscription_filter.app import build
from subscription_filter.shared.boundary import parliament_main

main = parliament_main(build(start=True))
