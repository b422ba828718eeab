"""The fuzzing harnesses: each feeds bytes to one codec's parsers.

An input passes a harness when every parser returns a value or raises
its codec's own error (:attr:`Target.errors`). :mod:`bench.fuzz.run`
imports this module under atheris' instrumentation of the probes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from probes import (
    activation,
    ber,
    dns,
    http,
    icmp,
    iscsi,
    iscsi_pdu,
    ldap,
    netbios,
    ntp,
    oncrpc,
    pathdiag,
    smb,
    ssh,
    tls,
)
from probes.base import Transport

MAX_LEN = 4096
"""The longest input fuzzed."""


@dataclass(frozen=True)
class Target:
    """One parser's harness: feed it bytes, let its own error pass."""

    feed: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]


def ntp_feed(data: bytes) -> None:
    reply = ntp.parse_reply(data)
    ntp.ref_id_text(reply, ipv6=False)
    ntp.answers(reply, 0)


def ssh_feed(data: bytes) -> None:
    with contextlib.suppress(ssh.SshError):
        ssh.find_banner(data, ended=False)
    with contextlib.suppress(ssh.SshError):
        ssh.find_banner(data, ended=True)
    ssh.parse_identification(data)


def tls_feed(data: bytes) -> None:
    tls.looks_like_tls(data)
    cert = tls.read_certificate(data)
    cert.evidence(cert.not_before)


def http_feed(data: bytes) -> None:
    with contextlib.suppress(http.HttpError):
        http.decode_chunked(data)
        http.chunked_done(data)
    response = http.parse_head(data)
    end = http.head_end(data)
    body = data[end:] if end >= 0 else b""
    activation.read_answer(response, body)
    http.body_length(response)


def iscsi_feed(data: bytes) -> None:
    with contextlib.suppress(iscsi_pdu.IscsiError):
        iscsi_pdu.check_login_answer(data)
    with contextlib.suppress(iscsi_pdu.IscsiError):
        iscsi_pdu.parse_portal(data.decode("latin-1"))
    pdu = iscsi_pdu.parse_pdu(data)
    for read in (
        iscsi_pdu.read_login_response,
        iscsi_pdu.read_text_response,
        iscsi_pdu.read_reject,
        iscsi_pdu.read_logout_response,
    ):
        with contextlib.suppress(iscsi_pdu.IscsiError):
            read(pdu)
    with contextlib.suppress(iscsi_pdu.IscsiError):
        response = iscsi_pdu.read_login_response(pdu)
        iscsi.login_step(iscsi.Negotiation(), response, pdu.data)
    iscsi_pdu.read_send_targets(iscsi_pdu.decode_keys(pdu.data))


def smb_feed(data: bytes) -> None:
    smb.looks_like_smb(data)
    with contextlib.suppress(smb.SmbError):
        smb.message_length(data[:4])
    with contextlib.suppress(smb.SmbError):
        smb.parse_reply(data, pid=1, mid=2)
    smb.parse_reply(data)


def netbios_feed(data: bytes) -> None:
    with contextlib.suppress(netbios.NetbiosError):
        header = netbios.parse_session_header(data[:4])
        netbios.parse_session_response(header, data[4:])
    trn_id = int.from_bytes(data[:2], "big")
    netbios.parse_node_status(data, trn_id)


def oncrpc_feed(data: bytes) -> None:
    records = oncrpc.RecordReader(max_record=MAX_LEN, max_fragments=8)
    records.feed(data)
    with contextlib.suppress(oncrpc.RpcError):
        for _ in range(MAX_LEN):
            if records.next_record() is None:
                break
    for parse in (oncrpc.parse_getport, oncrpc.parse_dump, oncrpc.parse_exports):
        with contextlib.suppress(oncrpc.RpcError):
            parse(data)
    oncrpc.parse_reply(data).status()


def ber_feed(data: bytes) -> None:
    with contextlib.suppress(ber.BerError):
        ber.frame_size(data, MAX_LEN)
    element = ber.decode(data)
    for read in (ber.read_integer, ber.read_boolean, ber.read_octets):
        with contextlib.suppress(ber.BerError):
            read(element)


def ldap_feed(data: bytes) -> None:
    with contextlib.suppress(ldap.LdapError):
        ldap.frame_size(data)
    message = ldap.parse_message(data)
    with contextlib.suppress(ldap.LdapError):
        ldap.SearchReplies(message.message_id).take(message)
    if isinstance(message.body, ldap.SearchEntry):
        ldap.root_dse_facts(message.body)


_QUERY = dns.make_query("anon-cp.storagegateway.us-east-1.amazonaws.com")
# The answers a raw socket may hand the path diagnostics: to a TCP probe
# of 443 and a UDP probe of 123, from 10.0.0.1 toward 10.0.0.2.
_FLOWS = (
    pathdiag.Flow("10.0.0.1", "10.0.0.2", 443, Transport.TCP),
    pathdiag.Flow("10.0.0.1", "10.0.0.2", 123, Transport.UDP),
)
_SENT = {40000: pathdiag.Sent(40000, seq=1000, data_len=0)}


def dns_feed(data: bytes) -> None:
    # Our own checks around dnspython's decoder: the id and QR test, and
    # the mapping of every decoder failure to the probe's error.
    dns.looks_like_reply(_QUERY, data)
    dns.read_answer(_QUERY, data)


def pathdiag_feed(data: bytes) -> None:
    # Stray packets on a raw socket: none may stop a diagnosis, so
    # nothing at all may escape here.
    packet = pathdiag.decode(data)
    for flow in _FLOWS:
        pathdiag.wanted(data, flow)
        if packet is not None:
            pathdiag.classify(packet, flow, _SENT)


def icmp_feed(data: bytes) -> None:
    report = icmp.parse_extended_err(data)
    report.describe()
    report.evidence()


TARGETS: dict[str, Target] = {
    "ntp": Target(ntp_feed, (ntp.NtpError,)),
    "ssh": Target(ssh_feed, (ssh.SshError,)),
    "tls-certificate": Target(tls_feed, (tls.TlsError,)),
    "http+activation": Target(http_feed, (http.HttpError,)),
    "iscsi_pdu": Target(iscsi_feed, (iscsi_pdu.IscsiError,)),
    "smb": Target(smb_feed, (smb.SmbError,)),
    "netbios": Target(netbios_feed, (netbios.NetbiosError,)),
    "oncrpc": Target(oncrpc_feed, (oncrpc.RpcError,)),
    "ber": Target(ber_feed, (ber.BerError,)),
    "ldap": Target(ldap_feed, (ldap.LdapError,)),
    "icmp": Target(icmp_feed, (icmp.IcmpError,)),
    "dns": Target(dns_feed, (dns.DnsError,)),
    "pathdiag": Target(pathdiag_feed, ()),
}
