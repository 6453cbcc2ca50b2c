"""Speed, scale and reliability benchmarks; ``studies/`` holds the one-question quality studies.

Every script runs as a module from the checkout, e.g. ``python -m benchmarks.bilinear``, and writes
its result to ``benchmarks/results/NAME.json`` with the command that produced it.
"""
