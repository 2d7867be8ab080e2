"""`make conformance`: the client libraries' own test suites, direct and through Sluice.

asyncpg's, psycopg2's and mysql-connector-python's test suites (from their PyPI source
archives, at the versions the project's clients are tested with) run against a
throwaway server directly, then through Sluice in transaction mode and in session mode;
docs/conformance.md compares the three runs test by test. See `python -m conformance
--help`, and `conformance.suites` for what runs and what is left out.
"""
