"""The shipped matrix and endpoints load, and bad matrix files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.registry import PROBES, TRANSPORTS
from rules import (
    GATEWAY_TYPES,
    MatrixError,
    RegionError,
    load_endpoints,
    load_matrix,
)


def test_shipped_matrix_loads_with_every_row() -> None:
    matrix = load_matrix(None, PROBES.keys(), TRANSPORTS)
    ids = {rule.id for rule in matrix.rules}
    assert len(ids) == len(matrix.rules) == 30
    ports = {(r.port, r.transport) for r in matrix.rules}
    for port in (111, 2049, 20048, 139, 445):
        assert (port, "tcp") in ports
        assert (port, "udp") in ports
    assert {(53, "udp"), (53, "tcp"), (123, "udp"), (3260, "tcp")} <= ports
    assert {(137, "udp"), (138, "udp"), (389, "tcp"), (636, "tcp")} <= ports
    assert {(8080, "tcp"), (22, "tcp"), (80, "tcp"), (443, "tcp")} <= ports


def test_every_table_rule_number_is_present() -> None:
    matrix = load_matrix(None, PROBES.keys())
    numbers = {r.table_rule for r in matrix.rules if r.table_rule}
    assert numbers == set(range(1, 9))


@pytest.mark.parametrize("gateway_type", GATEWAY_TYPES)
def test_every_type_gets_dns_ntp_and_aws(gateway_type: str) -> None:
    rules = load_matrix(None, PROBES.keys()).select(gateway_type, False)
    probes = {rule.probe for rule in rules}
    assert {"dns", "ntp", "tls", "ssh", "activation"} <= probes
    assert not any(rule.appliance for rule in rules)


def test_appliance_adds_the_proxy_rule() -> None:
    matrix = load_matrix(None, PROBES.keys())
    plain = matrix.select("volume", False)
    appliance = matrix.select("volume", True)
    extra = {r.id for r in appliance} - {r.id for r in plain}
    assert extra == {"appliance.proxy"}


def test_file_types_split_nfs_and_smb() -> None:
    matrix = load_matrix(None, PROBES.keys())
    nfs = {r.id for r in matrix.select("file-nfs", False)}
    smb = {r.id for r in matrix.select("file-smb", False)}
    both = {r.id for r in matrix.select("file", False)}
    assert "file.nfs.mountd-udp" in nfs - smb
    assert "file.smb.smb-direct-tcp" in smb - nfs
    assert both == nfs | smb


GOOD_ROW = """
[[rule]]
id = "x.one"
types = ["volume"]
source = "gateway"
destination = "dns"
direction = "outbound"
transport = "udp"
port = 53
probe = "dns"
required = true
purpose = "Name resolution."
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('probe = "dns"', 'probe = "nope"'), "unknown probe 'nope'"),
        (("port = 53", "port = 70000"), "port 70000 out of range"),
        (("port = 53", "port = 0"), "port 0 out of range"),
        (("port = 53", "port = true"), "port must be int"),
        (('transport = "udp"', 'transport = "sctp"'), "transport must be"),
        (('types = ["volume"]', 'types = ["cloud"]'), "unknown 'cloud'"),
        (('direction = "outbound"', 'direction = "up"'), "direction must"),
        (('source = "gateway"', 'source = "moon"'), "unknown source role"),
        (("required = true", 'required = "yes"'), "required must be bool"),
        (('purpose = "Name resolution."', "colour = 1"), "unknown field"),
        (('destination = "dns"', 'destination = "aws"'), "needs targets"),
        (('probe = "dns"', 'probe = "ssh"'), "probe 'ssh' speaks tcp, not udp"),
        (('probe = "dns"', 'probe = "ntp"'), ""),
        (("port = 53", "port = 53\ntable_rule = -4"), "table_rule -4 out of"),
        (('purpose = "Name resolution."', 'purpose = " "'), "purpose is empty"),
        (('destination = "dns"', 'destination = "gateway"'), "are the same"),
    ],
)
def test_bad_rows_name_file_rule_and_problem(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(GOOD_ROW.replace(*change))
    if not message:
        # A probe that speaks the rule's transport is fine.
        load_matrix(path, PROBES.keys(), TRANSPORTS)
        return
    with pytest.raises(MatrixError) as caught:
        load_matrix(path, PROBES.keys(), TRANSPORTS)
    text = str(caught.value)
    assert str(path) in text
    assert message in text
    assert "x.one" in text or "#1" in text


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(GOOD_ROW + GOOD_ROW)
    with pytest.raises(MatrixError, match=r"rule x\.one: duplicate id"):
        load_matrix(path, PROBES.keys())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]\n", "not valid TOML"),
        ("title = 'x'\n", "no \\[\\[rule\\]\\] tables"),
        ("rule = [1]\n", "rule #1: not a table"),
    ],
)
def test_broken_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(MatrixError, match=message):
        load_matrix(path, PROBES.keys())


def test_missing_file_is_a_matrix_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="cannot read"):
        load_matrix(tmp_path / "absent.toml", PROBES.keys())


def test_endpoint_names_per_region_and_bucket() -> None:
    endpoints = load_endpoints()
    assert endpoints.names("control", "eu-west-1") == [
        "anon-cp.storagegateway.eu-west-1.amazonaws.com",
        "client-cp.storagegateway.eu-west-1.amazonaws.com",
        "proxy-app.storagegateway.eu-west-1.amazonaws.com",
    ]
    assert endpoints.names("bucket", "us-east-2", ("a-b", "c.d")) == [
        "a-b.s3.us-east-2.amazonaws.com",
        "c.d.s3.us-east-2.amazonaws.com",
    ]
    assert endpoints.names("s3", "cn-north-1")[1] == ("s3.cn-north-1.amazonaws.com.cn")
    assert endpoints.activation_host("us-west-2") == (
        "anon-cp.storagegateway.us-west-2.amazonaws.com"
    )


def test_default_ntp_servers_are_the_gateways_own() -> None:
    assert load_endpoints().ntp_servers == (
        "0.amazon.pool.ntp.org",
        "1.amazon.pool.ntp.org",
        "2.amazon.pool.ntp.org",
        "3.amazon.pool.ntp.org",
        "time.aws.com",
    )


def test_unknown_region_is_refused() -> None:
    with pytest.raises(RegionError, match="us-east1"):
        load_endpoints().names("control", "us-east1")


def test_every_probe_says_its_transports() -> None:
    assert TRANSPORTS.keys() == PROBES.keys()
    assert all(spoken <= {"tcp", "udp"} and spoken for spoken in TRANSPORTS.values())
