"""`make demo` / `python -m sluice.demo`: the RDS Proxy recipe, then 500 short-lived clients.

First the recipe on MySQL runs from nothing (examples/cookbook-403's scripts
against a new `sluice server`) and its function is invoked many times at once.
Then the demo starts a throwaway PostgreSQL server (max_connections 100) and Sluice
in front of it, configured from examples/postgres.toml, sends rounds of
concurrent short-lived clients through the proxy, then the same crowd straight
to the server, and prints what happened. Modules: `stage` (server, database and
proxy configuration), `clients` (the workload), `report` (numbers and text),
`recipe` (the MySQL recipe and its invocations), `rds` (the PostgreSQL crowd
through a local RDS Proxy), `run` (the order of things and the clean-up).
"""
