"""Observability: logging (and, to come, metrics and the admin endpoint)."""
