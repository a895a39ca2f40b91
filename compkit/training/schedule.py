"""Learning-rate schedule: linear warm-up then cosine decay, per optimiser step."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """Return the LR factor at a step: linear from ~0 to 1 over `warmup_steps`, then cosine to `floor`."""

    warmup_steps: int
    total_steps: int
    floor: float = 0.01

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
