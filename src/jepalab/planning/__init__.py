"""Planning with world models: CEM and MPPI trajectory optimisers, the receding-horizon
loop, oracle and baseline planners, and episode pictures."""

from jepalab.planning.base import EnergyFn, PlanResult
from jepalab.planning.cem import CEMConfig, cem
from jepalab.planning.mpc import (
    EpisodeResult,
    Planner,
    evaluate,
    run_episode,
    shift_warm_start,
)
from jepalab.planning.mppi import MPPIConfig, mppi, mppi_weights
from jepalab.planning.planners import (
    EnergyPlanner,
    GreedyPolicy,
    OraclePlanner,
    RandomPolicy,
    optimize,
    oracle_config,
    oracle_energy,
)
from jepalab.planning.render import episode_image, save_episode_gif, save_episode_picture

__all__ = [
    "CEMConfig",
    "EnergyFn",
    "EnergyPlanner",
    "EpisodeResult",
    "GreedyPolicy",
    "MPPIConfig",
    "OraclePlanner",
    "PlanResult",
    "Planner",
    "RandomPolicy",
    "cem",
    "episode_image",
    "evaluate",
    "mppi",
    "mppi_weights",
    "optimize",
    "oracle_config",
    "oracle_energy",
    "run_episode",
    "save_episode_gif",
    "save_episode_picture",
    "shift_warm_start",
]
