"""The jobs around the learners, in four layers that import only downwards:

- ``runs``: run folders (one writer, interruption, overwrite), checkpoints (safe loading, the one
  file-or-run-folder resolver, exact resume state), metric logs and plots, process groups;
- ``assembly``: a validated config -> device, data splits, samplers, learner, optimiser; a checkpoint -> its learner;
- ``evaluation``: fixed-episode evaluation (sharded, feature-cached), ``metakd eval``, robustness, compare;
- ``training``: the one step loop, meta-training, pre-training, classification distillation and their configs;
- ``demo``: ``metakd demo``, on top of all of them.
"""
