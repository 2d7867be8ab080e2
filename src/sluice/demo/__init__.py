"""`make demo` / `python -m sluice.demo`: 500 short-lived clients through Sluice.

The demo starts a throwaway PostgreSQL server (max_connections 100) and Sluice
in front of it, configured from examples/postgres.toml, sends rounds of
concurrent short-lived clients through the proxy, then the same crowd straight
to the server, and prints what happened. Modules: `stage` (server, database and
proxy configuration), `clients` (the workload), `report` (numbers and text),
`run` (the order of things and the clean-up).
"""
