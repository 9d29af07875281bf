"""mechgrok: train, probe and report on grokking."""

__version__ = "0.1.0"
