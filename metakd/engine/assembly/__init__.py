"""Config -> the parts of a run (device, splits, samplers, optimiser: ``parts``), the learner (``learner``),
and a backbone's starting weights (``init_weights``); a checkpoint back into its learner."""
from .learner import learner_from_checkpoint, load_learner, make_learner
from .parts import (describe_device, make_optimizer, make_sampler, make_scheduler, normalization, resolve_device,
                    split_for)

__all__ = ["describe_device", "learner_from_checkpoint", "load_learner", "make_learner", "make_optimizer",
           "make_sampler", "make_scheduler", "normalization", "resolve_device", "split_for"]
