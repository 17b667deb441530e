"""Run folders (one writer, interruption, overwrite), checkpoints (safe loading, the one file-or-run-folder
resolver, exact resume state), metric logs and plots, and torch.distributed process groups."""
