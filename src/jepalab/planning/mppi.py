"""Model-predictive path integral control (Williams et al. 2017, "Information theoretic MPC
for model-based reinforcement learning", Alg. 2), the planner PLDM (Sobal et al. 2025) uses
on Two-Rooms.

Per iteration: sample ``S`` sequences around the mean, score them, and move the mean to the
softmax-weighted average of the samples, ``w_i = softmax(-(E_i - min E) / temperature)``.
Unlike CEM, every sample contributes, in proportion to how good it is.

Temperature. Energies of a latent world model (mean L1 distances of normalised features)
are of order 0.1-1, but their spread shrinks as the search converges and differs between
models, so a fixed temperature would be too greedy for one model and too flat for another.
By default (``normalize=True``) energies are divided by their standard deviation over the
``S`` candidates of each iteration, which makes ``temperature`` scale-free: it is measured
in standard deviations of the current batch of energies. ``temperature=0.5`` gives weight
``e^-2`` to a sample one standard deviation worse than the best -- in practice a few tens
of effective samples out of 300, about CEM's top-30. With ``normalize=False`` the
temperature is in raw energy units, as in the paper.
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
class MPPIConfig:
    """MPPI hyper-parameters.

    Attributes:
        samples: candidates scored per iteration, the current mean included.
        iterations: mean updates per plan.
        horizon: ``H``, actions per sequence.
        temperature: softmax temperature ``lambda``; in standard deviations of the batch's
            energies when ``normalize`` (see the module docstring), else in energy units.
        normalize: divide energies by their per-iteration standard deviation.
        noise_std: starting standard deviation of the sampling noise, in action units.
        adapt_std: refit the std to the weighted spread of the samples each iteration;
            ``False`` keeps ``noise_std`` throughout (the fixed-covariance original).
        min_std: floor on the adapted standard deviation.
        action_low, action_high: the box, a scalar or one value per action dimension.
    """

    samples: int = 300
    iterations: int = 10
    horizon: int = 5
    temperature: float = 0.5
    normalize: bool = True
    noise_std: float = 1.0
    adapt_std: bool = True
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
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.noise_std <= 0:
            raise ValueError(f"noise_std must be positive, got {self.noise_std}")


def mppi_weights(energies: Tensor, temperature: float, normalize: bool = True) -> Tensor:
    """``(S,)`` weights ``softmax(-(E - min E) / (temperature * scale))``, summing to 1;
    ``scale`` is the standard deviation of the finite energies if ``normalize``, else 1."""
    finite = energies[torch.isfinite(energies)]
    if finite.numel() == 0:  # nothing usable: keep the mean (row 0)
        return torch.nn.functional.one_hot(torch.tensor(0), energies.numel()).to(energies)
    scale = finite.std(unbiased=False).clamp_min(1e-12) if normalize else 1.0
    return torch.softmax(-(energies - finite.min()) / (temperature * scale), dim=0)


@torch.no_grad()
def mppi(
    energy_fn: EnergyFn,
    config: MPPIConfig,
    action_dim: int,
    init_mean: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PlanResult:
    """Minimise ``energy_fn`` over action sequences ``(H, A)`` with MPPI.

    Args:
        energy_fn: candidates ``(S, H, A)`` -> energies ``(S,)``; called once per iteration.
        config: the hyper-parameters.
        action_dim: ``A``.
        init_mean: ``(H, A)`` warm start; default the centre of the action box.
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
    std = torch.full_like(mean, config.noise_std)
    best = BestSoFar(mean)
    for _ in range(config.iterations):
        candidates, energies = sample_and_evaluate(
            energy_fn, mean, std, config.samples, low, high, generator
        )
        best.update(candidates, energies)
        w = mppi_weights(energies, config.temperature, config.normalize)[:, None, None]
        mean = (w * candidates).sum(0)
        if config.adapt_std:
            spread = (w * (candidates - mean) ** 2).sum(0).sqrt()
            std = spread.clamp_min(config.min_std)
    return best.result(mean, std)
