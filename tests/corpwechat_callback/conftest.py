"""The callback function's package on the path, as its entries see it."""

from __future__ import annotations

import sys
from pathlib import Path

FUNCTION = Path(__file__).resolve().parents[2] / "functions" / "corpwechat-callback"
if str(FUNCTION) not in sys.path:
    sys.path.insert(0, str(FUNCTION))
