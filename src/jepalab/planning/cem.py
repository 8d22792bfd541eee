"""The cross-entropy method over action sequences (Rubinstein 1999), as used for planning by
V-JEPA 2-AC (Assran et al. 2025, "V-JEPA 2", Sec. 4) and DINO-WM (Zhou et al. 2024).

Per iteration: sample ``S`` sequences from a diagonal Gaussian ``N(mean, std^2)`` of shape
``(H, A)``, clip them to the action box, score them, and refit ``mean`` and ``std`` to the
``K`` lowest-energy ones (the elites), blended with the previous values by ``momentum``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from jepalab.planning.base import (
    BestSoFar,
    Bound,
    EnergyFn,
    PlanResult,
    action_box,
    initial_mean,
    resolve_device,
    sample_and_evaluate,
    validate_common,
)


@dataclass
class CEMConfig:
    """CEM hyper-parameters. Defaults follow DINO-WM (300 samples, top 30, horizon 5, 10
    iterations, no momentum); V-JEPA 2-AC's released notebook uses ``samples=400,
    elites=10, iterations=10, horizon=2, momentum=0.15``.

    Attributes:
        samples: candidates scored per iteration, the current mean included.
        elites: lowest-energy candidates the mean and std are refitted to.
        iterations: refits per plan.
        horizon: ``H``, actions per sequence.
        momentum: ``mean <- momentum * old + (1 - momentum) * elite_mean`` (same for std),
            the V-JEPA 2 notebook's convention (0 = plain CEM).
        init_std: starting standard deviation, in action units.
        min_std: floor on the standard deviation, so the search never collapses completely.
        action_low, action_high: the box, a scalar or one value per action dimension.
    """

    samples: int = 300  # DINO-WM
    elites: int = 30  # DINO-WM ("topk")
    iterations: int = 10  # DINO-WM uses 10-30, V-JEPA 2 10
    horizon: int = 5  # DINO-WM; V-JEPA 2 plans 2 steps
    momentum: float = 0.0  # V-JEPA 2 notebook: 0.15
    init_std: float = 1.0
    min_std: float = 0.05
    action_low: Bound = -1.0
    action_high: Bound = 1.0

    def __post_init__(self) -> None:
        validate_common(
            self.samples,
            self.iterations,
            self.horizon,
            self.min_std,
            self.action_low,
            self.action_high,
        )
        if not 1 <= self.elites <= self.samples:
            raise ValueError(f"elites must be in [1, samples={self.samples}], got {self.elites}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.init_std <= 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")


@torch.no_grad()
def cem(
    energy_fn: EnergyFn,
    config: CEMConfig,
    action_dim: int,
    init_mean: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PlanResult:
    """Minimise ``energy_fn`` over action sequences ``(H, A)`` with the cross-entropy method.

    Args:
        energy_fn: candidates ``(S, H, A)`` -> energies ``(S,)``; called once per iteration.
        config: the hyper-parameters.
        action_dim: ``A``.
        init_mean: ``(H, A)`` warm start (e.g. the previous plan shifted by one step);
            default the centre of the action box.
        generator: source of the sampling noise (for reproducible plans).
        device: where candidates live; default the generator's device, else CPU.

    Returns:
        The best sequence found, its energy, the final mean/std, and the best energy after
        each iteration.
    """
    low, high = action_box(
        config.action_low, config.action_high, action_dim, resolve_device(device, generator)
    )
    mean = initial_mean(init_mean, config.horizon, low, high)
    std = torch.full_like(mean, config.init_std)
    best = BestSoFar(mean)
    for _ in range(config.iterations):
        candidates, energies = sample_and_evaluate(
            energy_fn, mean, std, config.samples, low, high, generator
        )
        best.update(candidates, energies)
        elites = candidates[torch.topk(energies, config.elites, largest=False).indices]
        m = config.momentum
        mean = m * mean + (1 - m) * elites.mean(0)
        std = m * std + (1 - m) * elites.std(0, unbiased=False)
        std = std.clamp_min(config.min_std)
    return best.result(mean, std)
