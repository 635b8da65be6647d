"""The one exception for user mistakes: printed as one line, exit code 2."""

from __future__ import annotations

USAGE = 2
FINDINGS = 1


class UserError(Exception):
    """A missing file, bad YAML, an unknown kind, a bad option: never a stack trace."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self.args[0])
