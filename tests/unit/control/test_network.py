"""The loopback VPC: default VPC and subnets, address allocation, security-group admission."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from sluice.control import network, registry, sgrules
from sluice.control.errors import ApiError
from sluice.control.store import Store

ACCOUNT = "123456789012"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state.db")
    network.ensure_default_vpc(s, ACCOUNT, "us-east-1", "127.20.0.0/16")
    return s


def subnets(store: Store) -> list[dict[str, Any]]:
    return sorted(store.all("subnet"), key=lambda s: s["AvailabilityZone"])


def add_group(store: Store, group_id: str, perms: list[dict[str, Any]]) -> None:
    doc = sgrules.group_doc(group_id, group_id, "test", "vpc-x", ACCOUNT, "us-east-1")
    rules = sgrules.rules_of(doc)
    for perm in perms:
        for rule in sgrules.split_permission(perm, False, lambda p: (p["GroupId"], ACCOUNT)):
            rules[f"sgr-{len(rules)}"] = {**rule, "Seq": len(rules) + 1}
    store.put("security_group", group_id, sgrules.with_rules(doc, rules))


def tcp(port: int, to: int | None = None, **source: Any) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port if to is None else to, **source}


def test_default_vpc_has_three_default_subnets_at_the_start_of_the_range(store: Store) -> None:
    [vpc] = store.all("vpc")
    assert vpc["CidrBlock"] == "127.20.0.0/16" and vpc["IsDefault"] is True
    found = [(s["AvailabilityZone"], s["CidrBlock"], s["VpcId"], s["DefaultForAz"])
             for s in subnets(store)]
    assert found == [("us-east-1a", "127.20.0.0/20", vpc["VpcId"], True),
                     ("us-east-1b", "127.20.16.0/20", vpc["VpcId"], True),
                     ("us-east-1c", "127.20.32.0/20", vpc["VpcId"], True)]
    assert [s["AvailabilityZoneId"] for s in subnets(store)] == [
        "use1-az1", "use1-az2", "use1-az3"]
    [default] = store.all("security_group")
    assert default["GroupName"] == "default" and default["VpcId"] == vpc["VpcId"]
    assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == default["GroupId"]


def test_ensure_default_vpc_is_idempotent(store: Store) -> None:
    before = (store.keys("vpc"), store.keys("subnet"), store.keys("security_group"))
    network.ensure_default_vpc(store, ACCOUNT, "us-east-1", "127.20.0.0/16")
    assert (store.keys("vpc"), store.keys("subnet"), store.keys("security_group")) == before


def test_small_range_gets_smaller_subnets_and_too_small_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "a.db")
    network.ensure_default_vpc(s, ACCOUNT, "eu-west-2", "127.30.0.0/24")
    assert sorted(x["CidrBlock"] for x in s.all("subnet")) == [
        "127.30.0.0/26", "127.30.0.128/26", "127.30.0.64/26"]
    assert {x["AvailabilityZoneId"] for x in s.all("subnet")} == {
        "euw2-az1", "euw2-az2", "euw2-az3"}
    with pytest.raises(ValueError, match="too small"):
        network.ensure_default_vpc(Store(tmp_path / "b.db"), ACCOUNT, "us-east-1", "127.1.0.0/27")
    with pytest.raises(ValueError, match="outside the VPC"):  # holds 127.0.0.2
        network.ensure_default_vpc(Store(tmp_path / "c.db"), ACCOUNT, "us-east-1", "127.0.0.0/16")


def test_zone_ids_follow_aws_abbreviations() -> None:
    assert network.zone_id("ap-southeast-2", "c") == "apse2-az3"
    assert network.zone_id("ca-central-1", "a") == "cac1-az1"


def allocate(
    store: Store, subnet: str, owner: str, groups: list[str], address: str | None = None
) -> str:
    """An interface's address, as CreateNetworkInterface takes one."""
    held = registry.allocate(store, subnet, owner, registry.Holder.INTERFACE, groups,
                             address=address)  # fmt: skip
    return held.address


def test_state_written_before_the_registry_is_upgraded(store: Store) -> None:
    old = {"SubnetId": "s", "VpcId": "v", "Groups": ["sg-1"]}
    for n, owner in enumerate(("prx-1", "prx-endpoint-1", "eni-1")):
        store.put("address", f"127.20.0.{n + 4}", {**old, "Address": f"127.20.0.{n + 4}",
                                                   "Owner": owner})  # fmt: skip
    store.put("db_proxy", "p", {"DBProxyName": "p", "_address": "127.20.0.4", "_port": 3306,
                                "_resource_id": "prx-1", "_tags": []})  # fmt: skip
    store.put("db_proxy_endpoint", "e", {"DBProxyEndpointName": "e", "_address": "127.20.0.5",
                                         "_port": 3306, "_resource_id": "prx-endpoint-1"})
    registry.upgrade(store)
    held = [(a.owner, a.holder, a.port, a.groups) for a in registry.attachments(store)]
    assert held == [("prx-1", "db-proxy", 3306, ("sg-1",)),
                    ("prx-endpoint-1", "db-proxy-endpoint", 3306, ("sg-1",)),
                    ("eni-1", "network-interface", 0, ("sg-1",))]  # fmt: skip
    assert store.get("db_proxy", "p") == {"DBProxyName": "p", "_tags": []}
    assert store.get("db_proxy_endpoint", "e") == {"DBProxyEndpointName": "e"}


def test_allocation_skips_reserved_and_used_addresses(store: Store) -> None:
    subnet = subnets(store)[1]["SubnetId"]
    first = allocate(store, subnet, "eni-1", ["sg-a"])
    second = allocate(store, subnet, "eni-2", [])
    assert (first, second) == ("127.20.16.4", "127.20.16.5")
    assert store.get("address", first) == {"Address": first, "SubnetId": subnet,
                                           "VpcId": store.all("vpc")[0]["VpcId"],
                                           "Groups": ["sg-a"], "Owner": "eni-1",
                                           "Holder": "network-interface", "Port": 0}
    registry.release(store, "eni-1")
    assert allocate(store, subnet, "eni-3", []) == first
    assert registry.free_count(store, subnets(store)[1]) == 4096 - 5 - 2


def test_allocation_of_a_chosen_address(store: Store) -> None:
    subnet = subnets(store)[0]["SubnetId"]
    assert allocate(store, subnet, "eni-1", [], "127.20.0.200") == "127.20.0.200"
    with pytest.raises(ApiError) as taken:
        allocate(store, subnet, "eni-2", [], "127.20.0.200")
    assert taken.value.code == "InvalidIPAddress.InUse"
    for bad in ("127.20.0.3", "127.20.15.255", "127.20.16.9", "nonsense"):
        with pytest.raises(ApiError) as refused:
            allocate(store, subnet, "eni-2", [], bad)
        assert refused.value.code == "InvalidParameterValue"


def test_full_subnet_and_unknown_subnet(tmp_path: Path) -> None:
    s = Store(tmp_path / "small.db")
    network.ensure_default_vpc(s, ACCOUNT, "us-east-1", "127.40.0.0/26")  # /28 subnets
    subnet = s.all("subnet")[0]
    got = [allocate(s, subnet["SubnetId"], f"eni-{i}", []) for i in range(11)]
    assert got[0] == "127.40.0.4" and got[-1] == "127.40.0.14"
    with pytest.raises(ApiError) as full:
        allocate(s, subnet["SubnetId"], "eni-x", [])
    assert full.value.code == "InsufficientFreeAddressesInSubnet"
    with pytest.raises(ApiError) as missing:
        allocate(s, "subnet-nope", "eni-x", [])
    assert missing.value.code == "InvalidSubnetID.NotFound"


def test_admits_by_cidr_and_port_range(store: Store) -> None:
    add_group(store, "sg-db", [tcp(3306, IpRanges=[{"CidrIp": "127.0.0.0/8"}]),
                               tcp(5000, 5010, IpRanges=[{"CidrIp": "10.0.0.0/8"}])])
    assert network.admits(store, ["sg-db"], "127.0.0.1", 3306)
    assert not network.admits(store, ["sg-db"], "127.0.0.1", 3307)
    assert not network.admits(store, ["sg-db"], "127.0.0.1", 3306, "udp")
    assert network.admits(store, ["sg-db"], "10.1.2.3", 5010)
    assert not network.admits(store, ["sg-db"], "10.1.2.3", 5011)
    assert not network.admits(store, ["sg-db"], "192.168.0.1", 5005)
    assert network.admits(store, ["sg-db"], "::ffff:127.0.0.1", 3306)
    assert not network.admits(store, ["sg-db"], "not-an-ip", 3306)
    assert not network.admits(store, [], "127.0.0.1", 3306)
    assert not network.admits(store, ["sg-unknown"], "127.0.0.1", 3306)


def test_admits_members_of_a_source_group_through_address_docs(store: Store) -> None:
    add_group(store, "sg-app", [])
    add_group(store, "sg-db", [tcp(3306, UserIdGroupPairs=[{"GroupId": "sg-app"}])])
    subnet = subnets(store)[0]["SubnetId"]
    member = allocate(store, subnet, "eni-app", ["sg-app"])
    stranger = allocate(store, subnet, "eni-other", [])
    assert network.admits(store, ["sg-db"], member, 3306)
    assert not network.admits(store, ["sg-db"], stranger, 3306)
    assert not network.admits(store, ["sg-db"], "127.0.0.1", 3306)
    assert "no security group" in network.explain(store, ["sg-db"], stranger, 3306)
    registry.set_groups(store, "eni-other", ["sg-app"])
    assert network.admits(store, ["sg-db"], stranger, 3306)
    assert registry.groups_of(store, stranger) == ["sg-app"]
    registry.release(store, "eni-app")
    assert not network.admits(store, ["sg-db"], member, 3306)


def test_protocol_all_admits_every_port_and_protocol(store: Store) -> None:
    add_group(store, "sg-any", [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}])
    for port, proto in ((1, "tcp"), (65535, "tcp"), (53, "udp"), (5432, "6")):
        assert network.admits(store, ["sg-any"], "127.0.0.1", port, proto)
    assert not network.admits(store, ["sg-any"], "127.0.0.2", 5432)


def test_a_revoked_rule_stops_admitting_at_once(store: Store) -> None:
    add_group(store, "sg-db", [tcp(5432, IpRanges=[{"CidrIp": "127.0.0.0/8"}])])
    assert network.admits(store, ["sg-db"], "127.0.0.1", 5432)
    doc = store.get("security_group", "sg-db")
    assert doc is not None
    kept = {k: r for k, r in sgrules.rules_of(doc).items() if r["IsEgress"]}
    store.put("security_group", "sg-db", sgrules.with_rules(doc, kept))
    assert not network.admits(store, ["sg-db"], "127.0.0.1", 5432)
    assert "admits tcp port 5432" in network.explain(store, ["sg-db"], "127.0.0.1", 5432)


def test_egress_rules_do_not_admit(store: Store) -> None:
    add_group(store, "sg-e", [])  # only the default egress rule to 0.0.0.0/0
    assert not network.admits(store, ["sg-e"], "127.0.0.1", 5432)


def test_rules_merge_by_protocol_and_ports_in_order() -> None:
    def same(pair: dict[str, Any]) -> tuple[str, str]:
        return pair["GroupId"], ACCOUNT

    rules = sgrules.split_permission(
        tcp(3306, IpRanges=[{"CidrIp": "10.0.0.0/8", "Description": "office"}],
            UserIdGroupPairs=[{"GroupId": "sg-1"}]), False, same)
    rules += sgrules.split_permission({"IpProtocol": "6", "FromPort": 3306, "ToPort": 3306,
                                       "IpRanges": [{"CidrIp": "10.9.9.9/32"}]}, False, same)
    assert sgrules.permissions_view(rules) == [{
        "IpProtocol": "tcp", "FromPort": 3306, "ToPort": 3306,
        "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "office"},
                     {"CidrIp": "10.9.9.9/32"}],
        "Ipv6Ranges": [], "PrefixListIds": [],
        "UserIdGroupPairs": [{"GroupId": "sg-1", "UserId": ACCOUNT}]}]


@pytest.mark.parametrize(("given", "expected"), [
    ("tcp", "tcp"), ("TCP", "tcp"), ("6", "tcp"), ("17", "udp"), ("1", "icmp"), ("-1", "-1"),
    ("all", "-1"), ("50", "50")])
def test_protocol_normalisation(given: str, expected: str) -> None:
    assert sgrules.normalize_protocol(given) == expected


@pytest.mark.parametrize("perm", [
    {"IpProtocol": "tcp", "FromPort": 10, "ToPort": 5, "IpRanges": [{"CidrIp": "1.0.0.0/8"}]},
    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 70000, "IpRanges": [{"CidrIp": "1.0.0.0/8"}]},
    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "1.0.0.0/33"}]},
    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "Ipv6Ranges": [{"CidrIpv6": "1.0.0.0/8"}]},
    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2},
    {"IpProtocol": "bogus", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]},
    {"IpProtocol": "300", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]},
])
def test_bad_permissions_are_refused(perm: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as caught:
        sgrules.split_permission(perm, False, lambda p: ("sg-1", ACCOUNT))
    assert caught.value.code == "InvalidParameterValue"


def test_ports_are_normalised() -> None:
    def one(perm: dict[str, Any]) -> tuple[int, int]:
        [rule] = sgrules.split_permission(
            {**perm, "IpRanges": [{"CidrIp": "10.0.0.1/8"}]}, False, lambda p: ("", ""))
        assert rule["CidrIpv4"] == str(ipaddress.ip_network("10.0.0.0/8"))
        return rule["FromPort"], rule["ToPort"]

    assert one({"IpProtocol": "tcp"}) == (0, 65535)
    assert one({"IpProtocol": "udp", "FromPort": -1, "ToPort": -1}) == (0, 65535)
    assert one({"IpProtocol": "icmp"}) == (-1, -1)
    assert one({"IpProtocol": "-1", "FromPort": 22, "ToPort": 22}) == (-1, -1)
