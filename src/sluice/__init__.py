"""Sluice: a connection-pooling proxy for PostgreSQL and MySQL/MariaDB."""
