"""Training core shared by every training stage.

- :mod:`dsdocre.train.distributed`: the process world (launcher or a world of one), ranks, and
  the stop decision all ranks agree on;
- :mod:`dsdocre.train.engine`: seeding, the learning-rate schedule and the DeepSpeed engine built
  from the stage's DeepSpeed JSON.
"""
