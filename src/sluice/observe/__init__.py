"""Observability: metrics, the admin console, logs."""
