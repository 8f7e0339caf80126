"""How many cells each decoding step fills.

For ``N`` steps over ``U`` unknown cells, after step ``s`` a fraction ``r(s)`` stays unknown:
arccos ``r = arccos((s+1)/N) / (pi/2)`` (the published default) or cosine ``r = cos(pi/2 (s+1)/N)``.
With ``d`` cells decoded before step ``s``: ``still = clamp(int(U r), 1, U - d - 1)`` and the step fills
``U - d - still``; the last step fills all that remain. For the published setting (``U = 256``) this is
exactly the released sampler's schedule; with prefilled cells the schedule spreads over the unknown count.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import ARPGError

SCHEDULES = ("arccos", "cosine", "linear")


def _unknown_ratio(schedule: str, s: int, steps: int) -> float:
    t = (s + 1) / steps
    if schedule == "arccos":
        return math.acos(t) / (math.pi / 2)
    if schedule == "cosine":
        return math.cos(math.pi / 2 * t)
    if schedule == "linear":
        return 1.0 - t
    raise ARPGError(f"unknown step_schedule {schedule!r}; choose one of {', '.join(SCHEDULES)} or a list of counts")


def step_counts(unknown: int, steps: int, schedule: str | Sequence[int] = "arccos") -> list[int]:
    """Cells decoded at each step; sums to ``unknown``, every entry >= 1.

    ``schedule`` may be a name (arccos, cosine, linear) or an explicit list of counts (then ``steps`` is
    ignored and the list is validated).
    """
    if unknown < 1:
        raise ARPGError("there are no unknown cells to decode")
    if not isinstance(schedule, str):
        counts = [int(c) for c in schedule]
        if not counts or min(counts) < 1 or sum(counts) != unknown:
            raise ARPGError(f"an explicit step_schedule needs positive counts summing to {unknown} "
                            f"(got {len(counts)} counts summing to {sum(counts)})")
        return counts
    if not isinstance(steps, int) or steps < 1 or steps > unknown:
        raise ARPGError(f"steps must be an integer in 1..{unknown} (the number of unknown cells), got {steps}")
    counts, done = [], 0
    for s in range(steps):
        if s == steps - 1:
            counts.append(unknown - done)
            break
        still = int(unknown * _unknown_ratio(schedule, s, steps))
        still = max(1, min(still, unknown - done - 1))
        counts.append(unknown - done - still)
        done += counts[-1]
    if min(counts) < 1:  # can happen only for degenerate steps ~ unknown; fall back to an even split
        base, extra = divmod(unknown, steps)
        counts = [base + (1 if i < extra else 0) for i in range(steps)]
    return counts
