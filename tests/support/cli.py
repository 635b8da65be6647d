"""The ``kubeevent`` command run in the test process."""

from __future__ import annotations


def kubeevent(argv: list[str]) -> int:
    """``kubeevent`` with ``argv``; the functions' log lines go where they went before
    (the CLI sends them nowhere, which would hide them from later tests)."""
    from kubeevent_cli import bridge
    from kubeevent_cli.main import main

    try:
        return main(argv)
    finally:
        for module in (bridge.notifier_logs, bridge.enricher_logs, bridge.filter_logs):
            module.set_stream(None)
