"""A trained action-conditioned model as a planning energy (V-JEPA 2-AC, Assran et al. 2025,
Sec. 4, Eq. 5).

The current and the goal images are encoded once; for a batch of candidate action sequences
``(S, H, A)`` the predictor rolls out all ``S`` candidates in one batched, key/value-cached
autoregressive pass (:meth:`~jepalab.models.ActionConditionedPredictor.rollout`), and the
energy is the mean L1 distance between the predicted and the goal features, of the final step
(``energy="final"``, the paper), summed over the steps (``"sum"``), or the smallest over the
steps (``"min"``, the plan's closest approach to the goal).

Why ``"min"`` is the Two-Rooms default: with the *true* dynamics as the model (the oracle
planner, 20 cross-room episodes, CEM 300 x 10, horizon 5, 5 env steps per action) the success
rate is 35% with ``"final"``, and 80% with ``"min"`` (``"sum"`` sits between). ``"final"``
keeps the goal at the end of every plan, so MPC keeps postponing the arrival; ``"sum"`` prefers
pressing against the wall to the detour through the door. See ``docs/planning.md``.

``hold`` plans coarser than the model steps: each planned action is the net displacement over
``hold`` model steps, fed to the predictor as ``hold`` equal steps of ``a / hold``. The same
number of decision variables then looks ``hold`` times further ahead (the energy is read at the
planned steps, every ``hold``-th prediction), as the oracle planner does with a larger
``action_repeat``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from jepalab.methods.action import ActionConditioned
from jepalab.planning.base import EnergyFn

Energy = Literal["final", "sum", "min"]
ENERGIES = ("final", "sum", "min")


class LatentWorldModel:
    """Images in, energies of candidate action sequences out.

    Args:
        method: a trained :class:`~jepalab.methods.action.ActionConditioned` (its encoder and
            predictor are used in eval mode, without gradients).
        mean, std: the normalisation of the training data (``data.params.mean/std``); frames
            are ``uint8`` and scaled to ``[0, 1]`` first, as the trajectory dataset does.
        energy: ``"final"``, ``"sum"`` or ``"min"`` over the planned steps.
        device: where the model runs.
        hold: model steps per planned action (1: one planned action per model step).
    """

    def __init__(
        self,
        method: ActionConditioned,
        mean: float | list[float] = 0.0,
        std: float | list[float] = 1.0,
        energy: Energy = "final",
        device: torch.device | str = "cpu",
        hold: int = 1,
    ) -> None:
        if energy not in ENERGIES:
            raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
        if hold < 1:
            raise ValueError(f"hold (model steps per planned action) must be >= 1, got {hold}")
        if method.use_states:
            raise ValueError(
                "this predictor takes proprioceptive states, which image-goal planning in the "
                "embedded environment does not provide; train it with method.use_states=false"
            )
        self.method = method.to(device).eval()
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        self.energy = energy
        self.hold = int(hold)

    def frames(self, image: np.ndarray) -> Tensor:
        """One ``(H, W)`` or ``(H, W, C)`` uint8 image -> ``(C, H, W)`` normalised floats."""
        x = torch.as_tensor(np.asarray(image)).float().div_(255.0)
        if x.ndim not in (2, 3):
            raise ValueError(f"expected one (H, W) or (H, W, C) image, got {tuple(x.shape)}")
        x = x[None] if x.ndim == 2 else x.movedim(-1, 0)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> Tensor:
        """``(N, D)`` features of one image, as the method encodes frames for training."""
        return self.method.encode(self.frames(image)[None, None])[0, 0]

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, chunk: int = 512) -> Tensor:
        """``(P, N, D)`` features of ``P`` images (``(P, H, W[, C])`` uint8), encoded
        ``chunk`` at a time."""
        out = []
        for first in range(0, len(images), chunk):
            frames = torch.stack([self.frames(image) for image in images[first : first + chunk]])
            out.append(self.method.encode(frames[:, None])[:, 0])
        return torch.cat(out)

    def make_energy(self, observation: np.ndarray, goal_observation: np.ndarray) -> EnergyFn:
        """The energy of candidate sequences from ``observation`` towards the goal image."""
        start, goal = self.encode(observation), self.encode(goal_observation)
        predictor = self.method.predictor

        @torch.no_grad()
        def energy_fn(actions: Tensor) -> Tensor:
            num, hold = actions.shape[0], self.hold
            first = start.expand(num, *start.shape)
            steps = actions.to(self.device, torch.float32)
            if hold > 1:  # (S, H, A) -> (S, H * hold, A) of a / hold
                steps = (steps / hold).repeat_interleave(hold, dim=1)
            predicted = predictor.rollout(first, steps)[:, hold - 1 :: hold]
            distance = latent_distance(predicted, goal)  # (S, H)
            if self.energy == "final":
                return distance[:, -1]
            return distance.sum(1) if self.energy == "sum" else distance.amin(1)

        return energy_fn


def latent_distance(a: Tensor, b: Tensor) -> Tensor:
    """The planning energy's distance between features ``(..., N, D)``: the mean L1 over
    tokens and channels (V-JEPA 2-AC, Eq. 5)."""
    return (a - b).abs().mean(dim=(-2, -1))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D samples (no tie correction: continuous data)."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


DISTANCE_BINS = (0.0, 5.0, 10.0, 20.0, 30.0, 45.0, 100.0)


@torch.no_grad()
def latent_distance_profile(
    world_model: LatentWorldModel,
    world,
    pairs: int = 300,
    seed: int = 0,
    bins: tuple[float, ...] = DISTANCE_BINS,
) -> dict:
    """How well the encoder's latent distance tracks the true distance between positions —
    the slope the planner's energy needs (an energy that is flat beyond a few pixels gives MPC
    nothing to follow towards a far goal).

    ``pairs`` random pairs of free positions of ``world`` (a :class:`~jepalab.envs.TwoRooms`)
    are rendered and encoded; the latent distance is the energy's mean L1 between the two
    encodings. Returns the Spearman correlation with the Euclidean distance over all pairs and
    the mean latent distance per Euclidean-distance bin (pixels).
    """
    rng = np.random.default_rng(seed)
    a, b = world.sample_positions(rng, pairs), world.sample_positions(rng, pairs)
    z = world_model.encode_images(world.render(np.concatenate([a, b])))  # (2P, N, D)
    latent = latent_distance(z[:pairs], z[pairs:]).cpu().numpy()
    true = np.linalg.norm(a - b, axis=-1)
    profile = {}
    for lo, hi in zip(bins[:-1], bins[1:], strict=False):
        inside = (true >= lo) & (true < hi)
        if inside.any():
            profile[f"{lo:g}-{hi:g}px"] = float(latent[inside].mean())
    return {"spearman": spearman(latent, true), "pairs": pairs, "mean_by_distance": profile}


@torch.no_grad()
def latent_distance_map(
    world_model: LatentWorldModel, world, goal: np.ndarray, chunk: int = 512
) -> np.ndarray:
    """The energy landscape the planner sees: the latent distance (the energy's mean L1)
    between the agent drawn at every free integer position of ``world`` and the agent drawn
    at ``goal``.

    Returns:
        ``(H, W)`` float array indexed ``[y, x]``; ``NaN`` where the agent cannot be (walls).
    """
    size = world.config.img_size
    xs = np.arange(size, dtype=np.float64)
    positions = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)  # (x, y), row-major in y
    free = world.is_free(positions)
    goal_latent = world_model.encode(world.render(np.asarray(goal, np.float64)))
    z = world_model.encode_images(world.render(positions[free]), chunk)  # (P, N, D)
    out = np.full(len(positions), np.nan)
    out[free] = latent_distance(z, goal_latent).cpu().numpy()
    return out.reshape(size, size)
