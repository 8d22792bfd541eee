"""What every sampling-based trajectory optimiser shares: the energy type, the result, the
action box, and one "sample around the mean, evaluate all candidates at once" step.

An *energy function* scores candidate action sequences ``(S, H, A)`` with energies ``(S,)``,
lower is better. With a learned world model it is the distance between the predicted and the
goal embedding -- V-JEPA 2-AC (Assran et al. 2025, "V-JEPA 2", Sec. 4) uses the L1 distance
of the final prediction; DINO-WM (Zhou et al. 2024) and PLDM (Sobal et al. 2025) are the same
shape of problem. The optimisers in :mod:`~jepalab.planning.cem` and
:mod:`~jepalab.planning.mppi` call it once per iteration with all ``S`` candidates, so a model
can evaluate them as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

EnergyFn = Callable[[Tensor], Tensor]
"""Maps candidate action sequences ``(S, H, A)`` to energies ``(S,)`` (lower is better)."""

Bound = float | Sequence[float]


@dataclass
class PlanResult:
    """The outcome of one trajectory optimisation.

    Attributes:
        actions: ``(H, A)`` the lowest-energy action sequence evaluated.
        energy: its energy (``nan`` for planners that do not optimise an energy).
        mean: ``(H, A)`` the final sampling mean (what a warm start usually continues from).
        std: ``(H, A)`` the final sampling standard deviation.
        energies_per_iteration: the best energy found so far after each iteration
            (non-increasing by construction).
    """

    actions: Tensor
    energy: float
    mean: Tensor
    std: Tensor
    energies_per_iteration: list[float] = field(default_factory=list)


def validate_common(
    samples: int, iterations: int, horizon: int, min_std: float, low: Bound, high: Bound
) -> None:
    """Checks shared by :class:`CEMConfig` and :class:`MPPIConfig`; raises ``ValueError``."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (the current mean is one of them), got {samples}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if min_std < 0:
        raise ValueError(f"min_std must be >= 0, got {min_std}")
    lo, hi = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
    if lo.dim() > 1 or hi.dim() > 1:
        raise ValueError("action_low and action_high must be scalars or 1-D per-dimension lists")
    if lo.shape != hi.shape and lo.dim() == hi.dim() == 1:
        raise ValueError(
            f"action_low ({lo.numel()} values) and action_high ({hi.numel()} values) "
            "must have the same length"
        )
    if not bool(torch.all(lo < hi)):
        raise ValueError(f"action_low must be < action_high everywhere, got {low} and {high}")


def action_box(
    low: Bound, high: Bound, action_dim: int, device: torch.device | None
) -> tuple[Tensor, Tensor]:
    """The box bounds as two ``(A,)`` float32 tensors; checks per-dimension lists' length."""
    bounds = []
    for name, value in (("action_low", low), ("action_high", high)):
        t = torch.as_tensor(value, dtype=torch.float32, device=device)
        if t.dim() == 1 and t.numel() != action_dim:
            raise ValueError(f"{name} has {t.numel()} values but action_dim is {action_dim}")
        bounds.append(t.expand(action_dim).clone())
    return bounds[0], bounds[1]


def initial_mean(init_mean: Tensor | None, horizon: int, low: Tensor, high: Tensor) -> Tensor:
    """``(H, A)`` starting mean: the warm start clipped to the box, else the box centre."""
    action_dim = low.numel()
    if init_mean is None:
        return ((low + high) / 2).expand(horizon, action_dim).clone()
    init_mean = torch.as_tensor(init_mean, dtype=torch.float32, device=low.device)
    if init_mean.shape != (horizon, action_dim):
        raise ValueError(
            f"init_mean must have shape (horizon, action_dim) = ({horizon}, {action_dim}), "
            f"got {tuple(init_mean.shape)}"
        )
    return torch.clamp(init_mean, low, high)


def resolve_device(
    device: torch.device | str | None, generator: torch.Generator | None
) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def sample_and_evaluate(
    energy_fn: EnergyFn,
    mean: Tensor,
    std: Tensor,
    samples: int,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Draw ``samples - 1`` sequences ``clip(mean + std * eps)``, add the mean itself as row 0,
    and score all ``samples`` rows with one ``energy_fn`` call.

    Keeping the mean among the candidates means an iteration can always fall back to where
    it started, so a good warm start is never lost.

    Returns:
        candidates ``(S, H, A)`` and their energies ``(S,)`` (``nan`` replaced by ``+inf``).
    """
    eps = torch.randn(
        (samples - 1, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype
    )
    noisy = torch.clamp(mean + std * eps, low, high)
    candidates = torch.cat([mean[None], noisy])
    energies = energy_fn(candidates)
    if not isinstance(energies, Tensor) or energies.shape != (samples,):
        shape = tuple(energies.shape) if isinstance(energies, Tensor) else type(energies)
        raise ValueError(
            f"energy_fn must map candidates {tuple(candidates.shape)} to energies of shape "
            f"({samples},), got {shape}"
        )
    energies = torch.nan_to_num(energies.detach().float(), nan=float("inf"))
    return candidates, energies.to(mean.device)


class BestSoFar:
    """Tracks the lowest-energy candidate over iterations and the history of its energy."""

    def __init__(self, mean: Tensor) -> None:
        self.actions = mean.clone()
        self.energy = float("inf")
        self.history: list[float] = []

    def update(self, candidates: Tensor, energies: Tensor) -> None:
        i = int(torch.argmin(energies))
        if float(energies[i]) < self.energy:
            self.energy = float(energies[i])
            self.actions = candidates[i].clone()
        self.history.append(self.energy)

    def result(self, mean: Tensor, std: Tensor) -> PlanResult:
        return PlanResult(self.actions, self.energy, mean, std, self.history)
