"""Learning-rate and weight-decay schedules of I-JEPA (``src/utils/schedulers.py`` semantics).

All schedules are pure functions of the step, so a resumed run recomputes them exactly.
"""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, warmup_steps: int, total_steps: int, start: float, peak: float, final: float
) -> float:
    """Linear warmup ``start -> peak`` over ``warmup_steps``, then cosine ``peak -> final``."""
    if step < warmup_steps:
        return start + (peak - start) * step / max(warmup_steps, 1)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    progress = min(progress, 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, total_steps: int, start: float, final: float) -> float:
    """Cosine ``start -> final`` over ``total_steps`` (I-JEPA weight decay 0.04 -> 0.4)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
