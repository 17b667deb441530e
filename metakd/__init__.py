"""metakd: few-shot meta-learning with knowledge distillation.

The public entry points an installed user needs, imported on first use so that ``import metakd`` stays light:
``load_learner(path)`` (a trained checkpoint or run folder -> its learner), ``preprocess_for`` and
``episode_from_files`` (your image files -> an episode, preprocessed as the run's training images),
``build_learner`` / ``build_backbone`` (by registered name), ``load_split`` and ``EpisodeSampler``
(data -> episodes). Every learner answers ``adapt(support_x, support_y)`` and ``predict(fast, query_x)``.
"""
__version__ = "0.1.0"

_PUBLIC = {
    "load_learner": "metakd.engine.assembly.learner",
    "build_learner": "metakd.learners",
    "build_backbone": "metakd.models",
    "load_split": "metakd.data",
    "EpisodeSampler": "metakd.data",
    "EpisodeBatch": "metakd.data.episode",
    "preprocess_for": "metakd.data.preprocess",
    "episode_from_files": "metakd.data.preprocess",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'metakd' has no attribute {name!r}")
