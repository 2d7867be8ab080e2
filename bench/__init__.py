"""The benchmark harness: `python -m bench.run` (or `make bench`).

Sluice, PgBouncer and a direct connection measured side by side against one
throwaway PostgreSQL, in one run, on this machine; results go to
`bench/results/latest.json` and `docs/benchmarks.md`.
"""
