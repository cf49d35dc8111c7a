"""Observability: logging, with every known secret masked."""
