"""A trained jepalab world model as a stable-worldmodel cost model, so that its own planning
code -- ``stable_worldmodel.policy.WorldModelPolicy`` with its ``CEMSolver`` or
``MPPISolver``, driven by ``World.evaluate`` -- runs our model unchanged.

Their solvers call one method of the model (``stable_worldmodel/solver/cem.py``,
``CEMSolver.solve``): ``get_cost(info, candidates) -> (B, S)``, lower is better, with

* ``candidates``: ``(B, S, H, action_dim * action_block)`` -- ``S`` candidate plans of ``H``
  blocks of ``action_block`` environment actions for each of ``B`` environments;
* ``info``: the environments' observations broadcast over the candidates, each ``(B, S, 1,
  ...)``; ``info["pixels"]`` the current frame and ``info["goal"]`` the goal frame (present in
  their dataset-mode evaluation, ``World.evaluate(dataset=...)``), uint8, channels last
  ``(..., H, W, 3)`` or, after a transform, channels first.

The cost of a plan is our planning energy (:class:`~jepalab.planning.world_model.
LatentWorldModel`): the model encodes the current and the goal frame and rolls the plan out
in latent space, one model step per environment action, or per block of ``action_block``
actions for a model trained on such blocks (``data.params.action_reduce=concat``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepalab.envs.gymnasium import resize_frame
from jepalab.errors import ConfigError
from jepalab.planning.world_model import LatentWorldModel


class SWMCostModel:
    """``get_cost(info, candidates)`` of a :class:`LatentWorldModel` (module docstring).

    Args:
        world_model: the trained model as a planning energy.
        action_dim: actions per environment step (TwoRoom, Push-T: 2).
        image_size: side the model's encoder takes; frames of another size are resized.
    """

    def __init__(self, world_model: LatentWorldModel, action_dim: int = 2, image_size: int = 64):
        self.world_model, self.action_dim, self.image_size = world_model, action_dim, image_size
        self.calls = 0

    @property
    def model_action_dim(self) -> int:
        """Actions per model step: ``action_dim``, or ``k * action_dim`` for a model trained
        on blocks of ``k`` environment actions (``data.params.action_reduce=concat``, as
        their ``action_block``); a candidate block is then one model step."""
        predictor = getattr(self.world_model.method, "predictor", None)
        return int(getattr(predictor, "action_dim", self.action_dim))

    @classmethod
    def from_run(
        cls, ckpt: str, energy: str = "final", device: str = "cpu", action_dim: int = 2
    ) -> SWMCostModel:
        """The action-conditioned run (or checkpoint) ``ckpt`` as a cost model, with its
        training data's normalisation and image size:

        >>> model = SWMCostModel.from_run("runs/swm_tworoom_wm")  # doctest: +SKIP
        >>> policy = WorldModelPolicy(solver=CEMSolver(model), config=PlanConfig(...))
        """
        from jepalab.runs import load_action_model

        method, config = load_action_model(ckpt, device)
        params = config.get("data", {}).get("params", {})
        world_model = LatentWorldModel(
            method, params.get("mean", 0.0), params.get("std", 1.0), energy, device
        )
        size = int(config.get("encoder", {}).get("img_size", 64))
        return cls(world_model, action_dim=action_dim, image_size=size)

    def _frame(self, value: Any) -> np.ndarray:
        """The first ``(H, W, 3)`` uint8 frame of ``info[key]`` (the same for every candidate)."""
        x = value.detach().cpu() if isinstance(value, Tensor) else torch.as_tensor(value)
        while x.ndim > 3:
            x = x[0]
        if x.shape[-1] != 3 and x.shape[0] == 3:  # channels first, after their transform
            x = x.movedim(0, -1)
        if x.dtype != torch.uint8:  # a float image in [0, 1] or [0, 255]
            x = (x * 255 if float(x.max()) <= 1.0 else x).round().clamp(0, 255).to(torch.uint8)
        return resize_frame(x.numpy(), self.image_size)

    def get_cost(self, info: dict[str, Any], candidates: Tensor) -> Tensor:
        """``(B, S)`` float32 costs of ``candidates`` ``(B, S, H, action_dim * block)``."""
        for key in ("pixels", "goal"):
            if key not in info:
                raise ConfigError(
                    f"get_cost: info has no {key!r} image; the goal image comes with "
                    "stable-worldmodel's dataset-mode evaluation, World.evaluate(dataset=...)"
                )
        b, s, h, width = candidates.shape
        step = self.model_action_dim
        if width % step:
            raise ConfigError(
                f"get_cost: candidates of width {width} are not blocks of the model's {step}-D "
                "actions"
            )
        steps = candidates.reshape(b, s, h * (width // step), step)
        costs = torch.empty(b, s, dtype=torch.float32)
        for env in range(b):
            energy = self.world_model.make_energy(
                self._frame(info["pixels"][env]), self._frame(info["goal"][env])
            )
            costs[env] = energy(steps[env].float()).float().cpu()
        self.calls += 1
        return costs.to(candidates.device)


__all__ = ["SWMCostModel"]
