"""The soak's parts; ``benchmarks/soak.py`` is the command, and its docstring tells what
a run does.

- ``checker``: the stream each client should read, and the check of what it reads;
- ``client``: a client's socket (WebSocket or Unix), and the roles' control channel;
- ``upstream``, ``clients``, ``churn``: the roles, each a process of its own
  (``soak.py ROLE``); ``upstream`` also has the driver's side of it, its sessions and
  restarts;
- ``context``: what the parts share (settings, directory, events, checks, processes)
  and the Veylor under test;
- ``reloads``, ``stalls``, ``checkpoints``: the driver's activities; ``held``: which
  connections Veylor really holds, from /proc;
- ``driver``: the run, phase by phase; ``verdict``: its checks and reports.
"""
