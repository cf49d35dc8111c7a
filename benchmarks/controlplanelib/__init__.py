"""The control-plane benchmark's parts; ``benchmarks/controlplane.py`` is the command,
and its docstring tells what a run does.

- ``deliveries``: the control client, which stamps every delivery, and the statistics
  of its deliveries;
- ``results``: what a run found, its targets, and its Markdown report.
"""
