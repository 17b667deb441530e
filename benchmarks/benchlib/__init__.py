"""What the benchmark scripts share: the timed MAML work and its peers (``maml_work``), timing and peak memory
(``timing``). The scripts put benchmarks/ on sys.path and import ``benchlib.<module>``."""
