"""Training: one loop (:mod:`~mechgrok.training.loop`) for one model (:func:`train`,
:func:`resume`) and for K seeds as one batched model (:func:`train_seeds`); losses, optimisers
and the learning-rate schedule beside it."""

from mechgrok.training.loop import TrainingInterrupted, TrainResult, resume, train
from mechgrok.training.vmap import train_seeds

__all__ = ["TrainResult", "TrainingInterrupted", "resume", "train", "train_seeds"]
