"""The benchmark harness: `python -m bench.run` (or `make bench`).

Sluice, PgBouncer and a direct connection measured side by side against one
throwaway PostgreSQL, and Sluice's MySQL proxy against a direct connection to
one throwaway MariaDB, in one run, on this machine; results go to
`bench/results/latest.json` (with the runs' settings in `latest.runs.json`)
and `docs/benchmarks.md`.
"""
