"""metakd: few-shot meta-learning with knowledge distillation."""
__version__ = "0.1.0"

