"""Embedded environments for action-conditioned world models and planning (numpy only)."""

from jepalab.envs.two_rooms import TwoRooms, TwoRoomsConfig, TwoRoomsEnv

__all__ = ["TwoRooms", "TwoRoomsConfig", "TwoRoomsEnv"]
