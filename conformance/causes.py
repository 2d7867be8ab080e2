"""Why tests that pass directly fail through Sluice: the causes found by reading the failures.

Each `Cause` names the tests it explains (regexes searched in the test id, optionally
also in the failure text) and says whether any pooler would fail them in that mode
(`inherent`) or what Sluice does differently. The report groups regressions by the
first cause that matches; a regression no cause matches is listed as unclassified
with its failure, so a new failure is never hidden behind an old explanation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conformance.results import Difference


@dataclass(frozen=True)
class Cause:
    """One reason for failures through Sluice, and the tests it explains."""

    key: str
    title: str
    why: str
    inherent: bool  # any pooler in this mode: not a Sluice defect
    tests: tuple[str, ...]  # regexes searched in the test id
    modes: tuple[str, ...] = ("transaction", "session")
    detail: str = ""  # regex that must also be found in the failure text, if given

    def explains(self, diff: Difference, mode: str) -> bool:
        if mode not in self.modes or not any(re.search(p, diff.test) for p in self.tests):
            return False
        return not self.detail or re.search(self.detail, diff.detail) is not None


CAUSES: tuple[Cause, ...] = ()


def classify(diff: Difference, mode: str) -> Cause | None:
    """The first cause that explains `diff` in `mode`, if any."""
    for cause in CAUSES:
        if cause.explains(diff, mode):
            return cause
    return None
