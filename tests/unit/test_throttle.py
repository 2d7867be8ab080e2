"""The failed-login throttle and the login caps, on a fake clock (they take the time as input)."""

from __future__ import annotations

import logging

import pytest

from sluice.config import ProxyConfig, parse
from sluice.errors import ConfigError
from sluice.session.admission import Admission, address_of
from sluice.session.throttle import FORGIVE, FREE, MAX_ENTRIES, MAX_PAUSE, AuthThrottle, pause

ATTACKER, GOOD = "127.0.0.1", "127.0.0.2"


def attack(throttle: AuthThrottle, checks: int, start: float = 1000.0) -> float:
    """An attacker at one address sending a wrong password as soon as it is let: the time
    its `checks` wrong passwords take (a blocked address waits out its block)."""
    now = start
    done = 0
    while done < checks:
        blocked = throttle.blocked_for(ATTACKER, now)
        if blocked:
            now += blocked
            continue
        now = throttle.check_at(ATTACKER, now)
        if throttle.blocked_for(ATTACKER, now):
            continue  # blocked while it waited its turn: refused, nothing checked
        now += throttle.failed(ATTACKER, "app", now)  # the answer comes after the user's pause
        done += 1
    return now - start


def test_a_thousand_wrong_passwords_from_one_address_take_more_than_a_minute() -> None:
    assert attack(AuthThrottle("p"), 1000) >= 60.0


def test_a_thousand_wrong_passwords_sent_at_once_are_checked_one_by_one() -> None:
    throttle = AuthThrottle("p")
    now = 50.0
    turns = []
    for _ in range(1000):  # every connection has sent its password at the same instant
        at = throttle.check_at(ATTACKER, now)
        turns.append(at)
        if at == now and not throttle.blocked_for(ATTACKER, now):
            throttle.failed(ATTACKER, "app", now)
    # the first FREE are checked at once, then each waits its turn; the address is blocked
    # before the turns run out, and a waiting login finds it blocked when its turn comes
    assert turns[:FREE] == [now] * FREE
    assert turns[FREE] == now + pause(FREE)
    assert sorted(turns) == turns and turns[-1] > now + 60


def test_an_address_is_refused_after_the_limit_then_forgiven() -> None:
    throttle = AuthThrottle("p", limit=5, block_time=30.0)
    now = 0.0
    for _ in range(5):
        throttle.failed(ATTACKER, "app", now)
    assert throttle.blocked_for(ATTACKER, now) == 30.0
    assert throttle.blocked_for(GOOD, now) == 0.0
    assert throttle.check_at(GOOD, now) == now  # another address: no pause at all
    later = now + 30.0 + 5 * FORGIVE
    assert throttle.blocked_for(ATTACKER, later) == 0.0
    throttle.maintain(later)
    assert not throttle.addresses and not throttle.users


def test_a_few_mistakes_cost_nothing() -> None:
    throttle = AuthThrottle("p")
    for i in range(FREE - 1):
        assert throttle.failed(GOOD, "app", float(i)) == 0.0
        assert throttle.check_at(GOOD, float(i)) == float(i)


def test_a_user_attacked_from_many_addresses_gets_slow_failures_only() -> None:
    throttle = AuthThrottle("p")
    waits = [throttle.failed(f"10.0.{i // 250}.{i % 250}", "app", 5.0) for i in range(50)]
    assert waits[: FREE - 1] == [0.0] * (FREE - 1)
    assert waits[-1] == MAX_PAUSE
    # no address is slowed or blocked: a correct password of that user goes straight through
    assert throttle.check_at("10.0.0.7", 5.0) == 5.0
    assert throttle.blocked_for("10.0.0.7", 5.0) == 0.0


def test_limit_zero_turns_the_throttle_off() -> None:
    throttle = AuthThrottle("p", limit=0)
    for _ in range(100):
        assert throttle.failed(ATTACKER, "app", 1.0) == 0.0
    assert throttle.blocked_for(ATTACKER, 1.0) == 0.0
    assert throttle.check_at(ATTACKER, 1.0) == 1.0


def test_tables_are_bounded() -> None:
    throttle = AuthThrottle("p")
    for i in range(MAX_ENTRIES + 10):
        throttle.failed(f"a{i}", f"u{i}", 1.0)
    assert len(throttle.addresses) == MAX_ENTRIES and len(throttle.users) == MAX_ENTRIES


def test_bursts_are_logged_once_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    throttle = AuthThrottle("p", limit=10)
    caplog.set_level(logging.INFO, "sluice.auth")
    for i in range(40):
        throttle.failed(ATTACKER, "x" * 10_000, float(i) / 100)
    throttle.maintain(10_000.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # address blocked, user slowed, and the end of each
    assert all(len(line) < 400 for line in lines)


# ---- the caps on logins ---------------------------------------------------------------


def config(**limits: int) -> ProxyConfig:
    raw = {"proxy": [{"name": "p", "listen": "127.0.0.1:1", **limits}]}
    return parse(raw).proxies[0]


def test_caps_on_clients_and_logins() -> None:
    cfg = config(max_client_connections=10, max_logins=4, max_logins_per_address=2)
    admission = Admission()
    for address in (ATTACKER, ATTACKER):
        assert admission.refusal(cfg, 0, address) is None
        admission.enter(address)
    refused = admission.refusal(cfg, 2, ATTACKER)
    assert refused is not None and refused.sqlstate == "53300"
    assert "max_logins_per_address (2)" in refused.detail
    assert admission.refusal(cfg, 2, GOOD) is None
    admission.enter(GOOD)
    admission.enter("127.0.0.3")
    refused = admission.refusal(cfg, 4, "127.0.0.4")
    assert refused is not None and "max_logins (4)" in refused.detail
    admission.leave(ATTACKER)
    assert admission.refusal(cfg, 4, ATTACKER) is None
    refused = admission.refusal(cfg, 10, "127.0.0.5")
    assert refused is not None and "max_client_connections (10)" in refused.detail
    for address in (ATTACKER, GOOD, "127.0.0.3"):
        admission.leave(address)
    assert admission.logins == 0 and admission.by_address == {}


def test_defaults_and_validation() -> None:
    cfg = config()
    assert (cfg.login_timeout, cfg.max_client_connections, cfg.max_logins) == (15.0, 10000, 5000)
    assert (cfg.max_logins_per_address, cfg.auth_failure_limit, cfg.auth_block_time) == (
        1000,
        10,
        60.0,
    )
    with pytest.raises(ConfigError, match="login_timeout"):
        config(login_timeout=0)
    with pytest.raises(ConfigError, match="max_logins"):
        config(max_logins=0)


def test_address_of() -> None:
    assert address_of("127.0.0.1:5432") == "127.0.0.1"
    assert address_of("::1:5432") == "::1"
    assert address_of("unix") == "unix"
