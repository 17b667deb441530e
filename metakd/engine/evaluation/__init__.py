"""Evaluation on fixed episodes: the episode loop (``episodes``), split over ranks (``sharded``), on cached
features (``feature_cache``); ``metakd eval`` (``checkpoint_eval``), ``robustness`` and ``compare``."""
