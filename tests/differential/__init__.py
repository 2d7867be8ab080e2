"""Differential testing of Sluice's first rule: through the proxy, a client sees what it sees
connected directly.

A seeded generator writes a program: a few clients, each with its connection options,
and a schedule of (client, operation) steps. The program runs once against the database
directly and once through a fresh `sluice proxy` (transaction pooling, a pool smaller than
the number of clients), one step at a time in the same order, from the same freshly made
schemas. Every step's observables (rows, errors, transaction status, ParameterStatus
values or server status flags) and the rows committed at the end must be equal, except
for the differences listed in `limitations.toml`. A divergence is shrunk by delta
debugging to a small program, saved as JSON, and replayed with
`python -m tests.differential.replay FILE`.

The schedule never makes a step wait (see `model.py`): the generator keeps a model of
which clients may hold a database connection, which tables an open transaction wrote and
which lock keys a client may hold, and only schedules a step that can run at once both
directly and through a pool of `POOL_SIZE` connections.
"""
