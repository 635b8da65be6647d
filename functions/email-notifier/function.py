"""Entry for func (``new()``, served by func-python; see pyproject.toml)."""

from email_notifier.app import build
from email_notifier.shared.boundary import AsgiFunction


def new() -> AsgiFunction:
    """A function instance: func-python calls ``start(cfg)`` with the environment, then
    ``handle`` for each request."""
    return AsgiFunction(build)
