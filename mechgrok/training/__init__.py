"""Training: the loop, losses and optimisers. ``train`` and ``resume`` are the entry points."""

from mechgrok.training.loop import TrainResult, resume, train

__all__ = ["TrainResult", "resume", "train"]
