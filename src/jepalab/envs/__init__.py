"""Environments for action-conditioned world models and planning: the protocol the planning
loop needs (:mod:`jepalab.envs.protocol`) and the embedded Two-Rooms (numpy only)."""

from jepalab.envs.protocol import PlanningEnv
from jepalab.envs.two_rooms import TwoRooms, TwoRoomsConfig, TwoRoomsEnv

__all__ = ["PlanningEnv", "TwoRooms", "TwoRoomsConfig", "TwoRoomsEnv"]
