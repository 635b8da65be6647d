"""``python -m kubeevent_cli``."""

from .main import main

raise SystemExit(main())
