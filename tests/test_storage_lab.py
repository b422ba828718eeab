"""Storage and directory rules against real servers: tgt, Samba,
rpcbind with nfs-ganesha, slapd, and an SSH server posing as a gateway.

Each probe's verdict is asserted for the healthy servers and behind
nftables faults; where nmap's scripts can decide the same question, a test
runs them on the same lab and checks that both tools agree.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from probes import smb
from tests.lab import Lab
from tests.lab import topology as t
from tests.test_check_lab import check, one, results

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("faults")]

STORAGE_RULES = (
    "file.nfs.*",
    "file.smb.*",
)


def storage(lab: Lab, gateway: str, *only: str, **kw: Any) -> dict[str, Any]:
    selectors = [word for rule in only for word in ("--only", rule)]
    return check(lab, "--gateway", gateway, *selectors, **kw)


@pytest.mark.parametrize(
    "gateway_type", ["file-nfs", "file-smb", "file", "volume", "tape"]
)
def test_healthy_gateway_passes_storage_rules(lab: Lab, gateway_type: str) -> None:
    report = check(
        lab,
        "--gateway",
        t.GATEWAY,
        "--ad-server",
        t.DC,
        "--ntp-server",
        t.NTP_GOOD,
        "--support-host",
        t.SSH,
        gateway_type=gateway_type,
        expect_exit=0,
    )
    for result in report["results"]:
        if result["rule"] == "file.ad.netbios-dgm":
            # nmbd listens on 138 and, as the protocol has it, answers
            # nothing: the probe can only say it cannot tell.
            assert result["status"] in ("pass", "warn"), result
            continue
        assert result["status"] == "pass", result


def test_iscsi_lists_amazon_style_targets(lab: Lab) -> None:
    report = storage(
        lab, t.GATEWAY, "iscsi.target", gateway_type="volume", expect_exit=0
    )
    result = one(report, "iscsi.target")
    names = [target["name"] for target in result["evidence"]["targets"]]
    assert names == [t.ISCSI_TARGET]
    assert result["evidence"]["amazon_targets"] is True


def test_iscsi_chap_required_still_proves_the_path(lab: Lab) -> None:
    report = storage(lab, t.GATEWAY_CHAP, "iscsi.target", gateway_type="tape")
    result = one(report, "iscsi.target")
    assert result["status"] == "pass", result
    assert result["evidence"]["chap_required"] is True
    assert "CHAP required" in result["detail"]


def test_portmapper_names_nfs_and_mountd_ports(lab: Lab) -> None:
    report = storage(lab, t.GATEWAY, "file.nfs.portmapper-*", gateway_type="file")
    for rule in ("file.nfs.portmapper-tcp", "file.nfs.portmapper-udp"):
        result = one(report, rule)
        assert result["status"] == "pass", result
        assert result["evidence"]["nfs_port"] == 2049
        assert result["evidence"]["mountd_port"] == 20048


def test_nfs_and_mountd_answer(lab: Lab) -> None:
    report = storage(
        lab, t.GATEWAY, "file.nfs.nfs-*", "file.nfs.mountd-*", gateway_type="file"
    )
    for result in results(report, "file.nfs.nfs-tcp"):
        assert result["status"] == "pass", result
        assert 3 in result["evidence"]["versions"]
    mountd = one(report, "file.nfs.mountd-tcp")
    exports = [e["dir"] for e in mountd["evidence"]["exports"]]
    assert t.NFS_EXPORT in exports


def test_smb_negotiates_smb3(lab: Lab) -> None:
    report = storage(lab, t.GATEWAY, "file.smb.*-tcp", gateway_type="file-smb")
    for rule in ("file.smb.smb-direct-tcp", "file.smb.netbios-session-tcp"):
        result = one(report, rule)
        assert result["status"] == "pass", result
        assert result["evidence"]["dialect"].startswith("3.")


def test_smb1_only_server_fails(lab: Lab) -> None:
    report = storage(
        lab, t.GATEWAY_SMB1, "file.smb.smb-direct-tcp", gateway_type="file-smb"
    )
    result = one(report, "file.smb.smb-direct-tcp")
    assert (result["status"], result["reason"]) == ("fail", "protocol-error")
    assert result["evidence"]["smb1_only"] is True


def test_directory_rules_by_srv_discovery(lab: Lab) -> None:
    report = check(
        lab, "--ad-domain", "lab.test", "--only", "file.ad.*", gateway_type="file"
    )
    ldap = one(report, "file.ad.ldap")
    assert ldap["status"] == "pass", ldap
    assert ldap["host"] == "dc.lab.test"
    assert "dc=lab,dc=test" in ldap["evidence"]["naming_contexts"]
    ldaps = one(report, "file.ad.ldaps")
    assert ldaps["status"] == "pass", ldaps
    names = one(report, "file.ad.netbios-ns")
    assert names["status"] == "pass", names
    assert any(n["name"] == t.DC_NETBIOS_NAME for n in names["evidence"]["names"])


def test_srv_fallback_and_missing_controllers(lab: Lab) -> None:
    fallback = check(
        lab, "--ad-domain", "other.test", "--only", "file.ad.ldap", gateway_type="file"
    )
    assert one(fallback, "file.ad.ldap")["status"] == "pass"
    missing = check(
        lab, "--ad-domain", "nodc.test", "--only", "file.ad.ldap", gateway_type="file"
    )
    result = one(missing, "file.ad.ldap")
    # LDAP is not required by the matrix, so its failure is a warning.
    assert (result["status"], result["reason"]) == ("warn", "dns-failure")
    assert "_ldap._tcp.dc._msdcs.nodc.test" in result["detail"]


def test_no_directory_input_skips_with_the_reason(lab: Lab) -> None:
    report = check(lab, "--only", "file.ad.*", gateway_type="file")
    for result in report["results"]:
        assert result["status"] == "skip"
        assert "--ad-domain" in result["detail"]


@pytest.mark.parametrize(
    ("rule", "gateway_type"),
    [
        ("iscsi.target", "volume"),
        ("file.smb.smb-direct-tcp", "file-smb"),
        ("file.smb.netbios-session-tcp", "file-smb"),
        ("file.nfs.portmapper-tcp", "file-nfs"),
        ("file.nfs.nfs-tcp", "file-nfs"),
        ("file.nfs.mountd-tcp", "file-nfs"),
    ],
)
def test_ssh_on_a_storage_port_is_wrong_protocol(
    lab: Lab, rule: str, gateway_type: str
) -> None:
    report = storage(lab, t.IMPOSTOR, rule, gateway_type=gateway_type)
    result = one(report, rule)
    assert result["reason"] == "wrong-protocol", result
    assert "SSH-" in json.dumps(result["evidence"])


def test_ssh_on_ldap_ports_is_wrong_protocol(lab: Lab) -> None:
    report = check(
        lab, "--ad-server", t.IMPOSTOR, "--only", "file.ad.ldap*", gateway_type="file"
    )
    for rule in ("file.ad.ldap", "file.ad.ldaps"):
        result = one(report, rule)
        assert result["status"] == "warn"
        assert result["reason"] == "wrong-protocol", result
        assert "SSH-" in json.dumps(result["evidence"]), result


@pytest.mark.parametrize(
    ("rule", "port", "proto", "action", "reason"),
    [
        ("iscsi.target", 3260, "tcp", "drop", "timeout"),
        ("iscsi.target", 3260, "tcp", "reset", "refused"),
        ("file.smb.smb-direct-tcp", 445, "tcp", "prohibited", "prohibited"),
        ("file.smb.smb-direct-udp", 445, "udp", "prohibited", "prohibited"),
        ("file.smb.netbios-session-tcp", 139, "tcp", "drop", "timeout"),
        ("file.smb.netbios-session-udp", 139, "udp", "prohibited", "prohibited"),
        ("file.nfs.portmapper-tcp", 111, "tcp", "reset", "refused"),
        ("file.nfs.portmapper-udp", 111, "udp", "drop", "timeout"),
        ("file.nfs.nfs-udp", 2049, "udp", "prohibited", "prohibited"),
        ("file.nfs.mountd-tcp", 20048, "tcp", "host-unreachable", "unreachable"),
        ("file.nfs.mountd-udp", 20048, "udp", "drop", "timeout"),
    ],
)
def test_storage_faults(
    lab: Lab, rule: str, port: int, proto: str, action: str, reason: str
) -> None:
    lab.fault(action, t.GATEWAY, port, proto)
    gateway_type = "volume" if rule == "iscsi.target" else "file"
    report = storage(lab, t.GATEWAY, rule, gateway_type=gateway_type)
    result = one(report, rule)
    assert result["reason"] == reason, result


@pytest.mark.parametrize(
    ("rule", "port", "proto", "action", "reason"),
    [
        ("file.ad.netbios-ns", 137, "udp", "drop", "timeout"),
        ("file.ad.netbios-dgm", 138, "udp", "prohibited", "prohibited"),
        ("file.ad.ldap", 389, "tcp", "reset", "refused"),
        ("file.ad.ldaps", 636, "tcp", "drop", "timeout"),
    ],
)
def test_directory_faults(
    lab: Lab, rule: str, port: int, proto: str, action: str, reason: str
) -> None:
    lab.fault(action, t.DC, port, proto)
    report = check(lab, "--ad-server", t.DC, "--only", rule, gateway_type="file")
    result = one(report, rule)
    assert result["reason"] == reason, result


# nmap's scripts, run on the same lab, must agree wherever they decide.
# Each test reads the script's XML output (nmap 7.93), not its text.


def nmap(lab: Lab, *args: str) -> ET.Element:
    done = lab.exec_agent_ns(["nmap", "-n", "-Pn", "-oX", "-", *args], timeout=120)
    assert done.returncode == 0, done.stderr
    return ET.fromstring(done.stdout)


def script(root: ET.Element, script_id: str) -> ET.Element:
    found = [s for s in root.iter("script") if s.get("id") == script_id]
    assert found, f"nmap ran no {script_id}"
    return found[0]


def table(parent: ET.Element, key: str) -> ET.Element:
    found = parent.find(f"table[@key='{key}']")
    assert found is not None, f"no table {key!r} in {ET.tostring(parent)!r}"
    return found


def elem(parent: ET.Element, key: str) -> str:
    found = parent.find(f"elem[@key='{key}']")
    assert found is not None, f"no elem {key!r} in {ET.tostring(parent)!r}"
    return found.text or ""


def test_nmap_iscsi_info_agrees(lab: Lab) -> None:
    # Not GATEWAY_CHAP: nmap's iscsi-info reports its target as "NOT
    # required" after tgt rejects its login (see tests/lab/storage.py).
    root = nmap(lab, "-p", "3260", "--script", "iscsi-info", t.GATEWAY)
    theirs = {
        target.get("key"): elem(target, "Address")
        for target in script(root, "iscsi-info").findall("table")
    }
    report = storage(lab, t.GATEWAY, "iscsi.target", gateway_type="volume")
    ours = one(report, "iscsi.target")["evidence"]["targets"]
    names = {target["name"] for target in ours}
    assert names == set(theirs) == {t.ISCSI_TARGET}
    for target in ours:
        assert theirs[target["name"]] in target["portals"], (target, theirs)


def nmap_rpc_programs(found: ET.Element) -> set[tuple[int, int, str, int]]:
    """rpcinfo's table as (prog, vers, proto, port) rows, IPv4 only.

    Its tables are keyed by program, then by netid (tcp, udp, tcp6,
    udp6, local), each with a version list and one port.
    """
    rows: set[tuple[int, int, str, int]] = set()
    for program in found.findall("table"):
        prog = int(program.get("key", ""))
        for netid in program.findall("table"):
            proto = netid.get("key", "")
            if proto not in ("tcp", "udp"):
                continue
            port = int(elem(netid, "port"))
            for vers in table(netid, "version").findall("elem"):
                rows.add((prog, int(vers.text or ""), proto, port))
    return rows


def test_nmap_rpcinfo_agrees(lab: Lab) -> None:
    root = nmap(lab, "-p", "111", "--script", "rpcinfo", t.GATEWAY)
    theirs = nmap_rpc_programs(script(root, "rpcinfo"))
    rule = "file.nfs.portmapper-tcp"
    evidence = one(storage(lab, t.GATEWAY, rule), rule)["evidence"]
    rows = evidence["programs"]
    ours = {(p["prog"], p["vers"], p["proto"], p["port"]) for p in rows}
    # Portmap v2's DUMP carries only IPv4 TCP and UDP mappings; nmap's
    # tcp6, udp6 and local rows come from rpcbind v3/v4 and are left out.
    assert ours == theirs
    assert (100003, 3, "tcp", evidence["nfs_port"]) in theirs
    assert (100005, 3, "tcp", evidence["mountd_port"]) in theirs


def nmap_smb_dialects(found: ET.Element) -> list[str]:
    """smb-protocols' dialects, SMB2 and later named as ours ("3.1.1").

    nmap 7.93 writes an SMB2 dialect as the hex digits of its revision
    ("311" for 0x0311) and SMB1 as "NT LM 0.12 (SMBv1) [...]".
    """
    names: list[str] = []
    for entry in table(found, "dialects").findall("elem"):
        text = entry.text or ""
        if re.fullmatch("[0-9a-f]{3}", text):
            names.append(smb.dialect_name(int(text, 16)))
        else:
            names.append(text.split(" (", 1)[0])
    return names


def test_nmap_smb_protocols_agrees_on_smb2_and_later(lab: Lab) -> None:
    root = nmap(lab, "-p", "445", "--script", "smb-protocols", t.GATEWAY)
    theirs = nmap_smb_dialects(script(root, "smb-protocols"))
    rule = "file.smb.smb-direct-tcp"
    report = storage(lab, t.GATEWAY, rule, gateway_type="file-smb")
    evidence = one(report, rule)["evidence"]
    offered = [smb.dialect_name(d) for d in smb.OFFERED]
    assert theirs and set(theirs) <= set(offered), theirs
    # Our NEGOTIATE offers all of them, so the server picks the highest.
    highest = max(theirs, key=offered.index)
    assert evidence["dialect"] == highest == "3.1.1"


def test_nmap_smb_protocols_agrees_on_smb1_only(lab: Lab) -> None:
    root = nmap(lab, "-p", "445", "--script", "smb-protocols", t.GATEWAY_SMB1)
    theirs = nmap_smb_dialects(script(root, "smb-protocols"))
    rule = "file.smb.smb-direct-tcp"
    report = storage(lab, t.GATEWAY_SMB1, rule, gateway_type="file-smb")
    result = one(report, rule)
    assert theirs == ["NT LM 0.12"]
    assert result["status"] == "fail", result
    assert result["evidence"]["smb1_only"] is True
    assert result["evidence"]["smb1_dialect"] == theirs[0]


NBSTAT_NAME = re.compile(r"  (\S.*?)<([0-9a-f]{2})>\s+Flags: (.*)")


def nmap_netbios_names(found: ET.Element) -> set[tuple[str, bool]]:
    """nbstat's names as ("NAME<xx>", group) pairs.

    nbstat returns plain text (no XML table); it lists the names only
    at verbosity 1 or more.
    """
    output = found.get("output", "")
    assert "\nNames:\n" in output, output
    return {
        (f"{m[1]}<{m[2]}>", "<group>" in m[3])
        for m in map(NBSTAT_NAME.fullmatch, output.splitlines())
        if m
    }


def netbios_label(name: dict[str, Any]) -> str:
    """Our evidence's name as nbstat writes it: "LABDC<20>"."""
    return f"{name['name']}<{int(name['suffix'], 16):02x}>"


def test_nmap_nbstat_agrees(lab: Lab) -> None:
    root = nmap(lab, "-v", "-sU", "-p", "137", "--script", "nbstat", t.DC)
    theirs = nmap_netbios_names(script(root, "nbstat"))
    report = check(lab, "--ad-server", t.DC, "--only", "file.ad.netbios-ns")
    names = one(report, "file.ad.netbios-ns")["evidence"]["names"]
    ours = {(netbios_label(n), n["group"]) for n in names}
    assert ours == theirs
    assert (f"{t.DC_NETBIOS_NAME}<20>", False) in ours
    assert (f"{t.NETBIOS_WORKGROUP}<00>", True) in ours
