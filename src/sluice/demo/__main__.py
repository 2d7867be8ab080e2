"""`python -m sluice.demo` runs the demo (it needs the dev extras: `make demo` installs them)."""

import sys

try:
    import psycopg  # noqa: F401
except ImportError:
    print("the demo needs psycopg: run `make demo`, or pip install -e '.[dev]'", file=sys.stderr)
    raise SystemExit(2) from None

from sluice.demo.run import main

raise SystemExit(main())
