"""Planning with world models: CEM and MPPI trajectory optimisers, the receding-horizon
loop, oracle and baseline planners, and episode pictures.

Reference numbers on Two-Rooms (20 tasks with start and goal in different rooms, seeds 0-19,
2 shared CPU cores)::

    world = TwoRooms(); R = 10
    planner = OraclePlanner(world, oracle_config(world, R), action_repeat=R)  # CEM 300x10, H=5
    evaluate(TwoRoomsEnv(), planner, episodes=20, seed=0, action_repeat=R)
    # success 0.95 (MPPI 0.90), ~95 ms per replanning; GreedyPolicy 0.00, RandomPolicy 0.15

With ``action_repeat=5`` the 5-step horizon (61 px) is shorter than many detours through the
door and the oracle drops to 0.80 ("min" energy) / 0.35 ("final").
"""

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
    PLANNERS,
    EnergyPlanner,
    GreedyPolicy,
    OraclePlanner,
    RandomPolicy,
    optimize,
    oracle_config,
    oracle_energy,
)
from jepalab.planning.render import (
    episode_image,
    landscape_image,
    save_episode_gif,
    save_episode_picture,
    save_landscape_picture,
)

__all__ = [
    "PLANNERS",
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
    "landscape_image",
    "evaluate",
    "mppi",
    "mppi_weights",
    "optimize",
    "oracle_config",
    "oracle_energy",
    "run_episode",
    "save_episode_gif",
    "save_episode_picture",
    "save_landscape_picture",
    "shift_warm_start",
]
