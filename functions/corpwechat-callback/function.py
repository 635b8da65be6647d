"""Entry for func (``new()``, served by func-python; see pyproject.toml)."""

from corpwechat_callback.app import build
from corpwechat_callback.shared.boundary import AsgiFunction


def new() -> AsgiFunction:
    """A function instance: func-python calls ``start(cfg)`` with the environment, then
    ``handle`` for each request."""
    return AsgiFunction(build)
