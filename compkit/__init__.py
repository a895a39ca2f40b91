"""compkit: run a Kaggle retrieval competition from download to submission."""

__version__ = "0.1.0"
