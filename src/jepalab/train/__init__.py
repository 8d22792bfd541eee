"""The one Trainer, its schedules, checkpointing and logging."""

from jepalab.train.trainer import BadDataError, NonFiniteLossError, Trainer

__all__ = ["BadDataError", "NonFiniteLossError", "Trainer"]
