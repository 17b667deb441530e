"""What the benchmark scripts share, so each script holds only its own study: result writing, resumable
seeds x cells pieces and seed-level statistics (``results``), short training runs (``short_runs``), the
classification-distillation runs (``distill``), the timed MAML work and its peers (``maml_work``), and
timing and peak memory (``timing``). The scripts put benchmarks/ on sys.path and import ``benchlib.<module>``."""
