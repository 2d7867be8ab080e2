"""The control plane's state: JSON documents by (kind, key), kept in SQLite.

Every object the API manages (a role, a policy, a security group, a secret, a
DB proxy, ...) is one document. Documents are held in memory and written
through to SQLite on every change, so the data plane can consult them on each
new connection with a dictionary look-up, and a restart reads them all back.
Only the process that owns the data directory writes it.

Documents are plain JSON values; timestamps are epoch seconds (float). A
document handed out by `get` or `all` is shared: treat it as read-only and
`put` a changed copy. `version` counts changes, for caches derived from state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

Doc = dict[str, Any]
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


class Store:
    """Documents by kind and key, cached in memory, written through to SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._docs: dict[str, dict[str, Doc]] = {}
        self._seq = 0
        self._batch = 0
        self._derived: dict[str, tuple[int, Any]] = {}
        self.version = 0
        rows = self._db.execute("SELECT kind, key, seq, body FROM documents ORDER BY seq")
        for kind, key, seq, body in rows:
            self._docs.setdefault(kind, {})[key] = json.loads(body)
            self._seq = max(self._seq, seq)

    def get(self, kind: str, key: str) -> Doc | None:
        return self._docs.get(kind, {}).get(key)

    def all(self, kind: str) -> list[Doc]:
        """Every document of a kind, oldest first."""
        return list(self._docs.get(kind, {}).values())

    def keys(self, kind: str) -> list[str]:
        return list(self._docs.get(kind, {}))

    def derived(self, name: str, build: Callable[[Store], T]) -> T:
        """A value computed from the documents (compiled rules, say), kept until they change."""
        found = self._derived.get(name)
        if found is not None and found[0] == self.version:
            return cast(T, found[1])
        value = build(self)
        self._derived[name] = (self.version, value)
        return value

    def put(self, kind: str, key: str, doc: Doc) -> None:
        """Create or replace a document (a replaced one keeps its place in `all`)."""
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        docs = self._docs.setdefault(kind, {})
        self._seq += 1  # kept only by a new row: a replaced one keeps its first place
        self._db.execute(
            "INSERT INTO documents (kind, key, seq, body) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            (kind, key, self._seq, body),
        )
        docs[key] = json.loads(body)  # a private copy: the caller may keep mutating theirs
        self.version += 1

    def delete(self, kind: str, key: str) -> bool:
        docs = self._docs.get(kind, {})
        if key not in docs:
            return False
        self._db.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, key))
        del docs[key]
        self.version += 1
        return True

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several changes committed together (all or none reach the disk)."""
        outer = self._batch == 0
        if outer:
            self._db.execute("BEGIN")
        self._batch += 1
        try:
            yield
        except BaseException:
            self._batch -= 1
            if outer:
                self._db.execute("ROLLBACK")
                self._reload()
            raise
        self._batch -= 1
        if outer:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _reload(self) -> None:
        self._docs.clear()
        for kind, key, _seq, body in self._db.execute(
            "SELECT kind, key, seq, body FROM documents ORDER BY seq"
        ):
            self._docs.setdefault(kind, {})[key] = json.loads(body)
        self.version += 1
