"""Which refused PostgreSQL clients are awaited for their startup packet, and how many."""

from __future__ import annotations

from sluice.errors import LoginThrottled, OutOfFiles, TooManyConnections
from sluice.session.admission import MAX_LINGERING, Admission


def test_refusals_linger_up_to_the_bound() -> None:
    admission = Admission()
    cap = TooManyConnections("sorry, too many clients already")
    assert all(admission.linger(cap) for _ in range(MAX_LINGERING))
    assert not admission.linger(LoginThrottled("too many failed logins"))
    admission.lingered()
    assert admission.linger(LoginThrottled("too many failed logins"))
    assert admission.lingering == MAX_LINGERING


def test_out_of_files_is_refused_at_once() -> None:
    admission = Admission()
    assert not admission.linger(OutOfFiles("sorry, too many clients already"))
    assert admission.lingering == 0
