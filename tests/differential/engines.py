"""The grammar of each engine, by name."""

from __future__ import annotations

from .grammar import Grammar
from .my_grammar import GRAMMAR as MYSQL
from .pg_grammar import GRAMMAR as PG

GRAMMARS: dict[str, Grammar] = {"pg": PG, "mysql": MYSQL}
