"""The training core every training stage drives, one concern per module (lowest first):

- :mod:`~dsdocre.train.config`: the ``training:`` section every stage config has;
- :mod:`~dsdocre.train.distributed`: the process world (launcher or a world of one), ranks, the
  decisions all ranks agree on, seeding, whole parameters under ZeRO-3;
- :mod:`~dsdocre.train.control`: the per-step decision (stop, checkpoint; SIGTERM, non-finite steps);
- :mod:`~dsdocre.train.checkpoint`: saving, verifying and resuming DeepSpeed checkpoints, the
  run's fingerprint, the exported encoder;
- :mod:`~dsdocre.train.engine`: the DeepSpeed engine from the stage's JSON, its schedule and step;
- :mod:`~dsdocre.train.loop`: the one training loop, and the step source over annotated documents;
- :mod:`~dsdocre.train.annotated`: the skeleton shared by fine-tuning and the rank model;
- :mod:`~dsdocre.train.faults`: faults injected on purpose by the fault-tolerance tests.
"""
