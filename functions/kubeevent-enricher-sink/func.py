"""Entry for ``python -m parliament .`` (func deploy)."""

from enricher.app import build
from enricher.shared.boundary import parliament_main

main = parliament_main(build())
