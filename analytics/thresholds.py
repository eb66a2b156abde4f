"""The runbook's thresholds (day-2 operations guide): one place for every module that judges."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

#: A PVC over this share of its capacity needs attention (the guide's storage alert).
STORAGE_ALERT: Final = 0.85
#: ... and is expanded at this share.
STORAGE_EXPAND: Final = 0.90
#: CPU or memory utilization above this share is hot ...
SUSTAINED_UTILIZATION: Final = 0.85
#: ... when it stays there this long (the guide's "> 85 % sustained").
SUSTAINED_MIN: Final = timedelta(hours=1)
#: A hole this long between samples ends a sustained run: the member was not observed hot.
SUSTAINED_MAX_GAP: Final = timedelta(minutes=15)
#: The N-1 target: with the largest node gone, the rest should stay under this utilization.
HEADROOM_TARGET: Final = 0.85
