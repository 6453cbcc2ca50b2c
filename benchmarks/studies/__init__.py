"""One-question studies (each asks how good something is, not how fast it runs) and the paper table.

Run as modules from the checkout, e.g. ``python -m benchmarks.studies.paper_table``; the index of
questions, commands, result files and conclusions is ``benchmarks/studies/README.md``.
"""
