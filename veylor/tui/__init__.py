"""The operator's terminal UI (``veylor --tui``, ``veylor top``): the live routing graph
with per-edge rates, built with Textual (the ``tui`` extra)."""
