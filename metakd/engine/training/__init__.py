"""Training jobs on one step loop (``loop``): meta-training (``meta``), supervised pre-training (``pretrain``) and
classification distillation (``distill``) on the shared supervised trainer, and the supervised jobs' configs."""
