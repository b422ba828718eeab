"""iSCSI probe for TCP 3260: does the gateway's iSCSI target answer a
discovery session, and which targets does it list?

The agent plays an initiator: it logs in with ``SessionType=Discovery``
(RFC 7143 6.1 to 6.3), asks ``SendTargets=All`` in a Text Request
(RFC 7143 13.3) and logs out. The login starts in the security stage
(CSG 0, NSG 1) offering ``AuthMethod=None,CHAP``: a target that lets
anyone discover answers ``None`` and the login moves on to the
operational stage, while one that demands CHAP answers ``CHAP`` (it must
pick the first method it allows, RFC 7143 6.2.1), and the probe stops
there and closes the connection, before any failed authentication is
logged against it. A target that rejects the login outright with
"authentication failure" (status 0201) says the same. Skipping the
security stage (CSG 1 at once) would only ever get that reject, without
the method's name.

Verdicts: a listed set of targets passes, and so does a login that needs
CHAP, or that the target's access list refuses (status 0202: the
initiator name is random, so no list can know it), since either proves
the path and a real target. Target names under
``iqn.1997-05.com.amazon:`` are what a Storage Gateway exposes; a list
without them still passes, with ``amazon_targets`` false. A redirect
(status class 1) passes too: an iSCSI portal answered, though the
targets behind it were not listed. Other login statuses, a Reject PDU
and malformed answers are protocol errors; bytes that cannot begin a
login answer (an SSH banner, an HTTP reply) are the wrong protocol.

Every PDU read is bounded (:data:`~probes.iscsi_pdu.MAX_DATA_SEGMENT`
per data segment, :data:`MAX_LOGIN_ROUNDS` login and
:data:`MAX_TEXT_ROUNDS` text exchanges, :data:`MAX_STRAY_PDUS`
unsolicited PDUs skipped) and by the probe's deadline.

Limits: only the discovery session is tried, so ``chap_required``
speaks of discovery; whether each target wants CHAP for a normal
session (how Storage Gateway sets CHAP, per volume) would take a login
to every target, which this probe does not make. The portals a target
lists (``TargetAddress``) are compared with the address probed: when
none is that address (a gateway behind NAT), the detail says so, since
initiators connect to the listed portals next; they are not probed. A service that waits
for its own kind of request before saying anything (an HTTP server
reads until a blank line) shows as a timeout, not the wrong protocol;
an iSCSI target with no targets at all may hang up at once (tgt does),
which shows as the wrong protocol. No CHAP exchange, no digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from probes.base import (
    JSONValue,
    Outcome,
    ProbeRequest,
    Reason,
    failed,
    held_open,
    passed,
    printable,
)
from probes.iscsi_pdu import (
    BHS_SIZE,
    MAX_DATA_SEGMENT,
    RESERVED_TAG,
    IscsiError,
    Keys,
    LoginResponse,
    LoginStatus,
    NotIscsiError,
    Opcode,
    Pdu,
    Reject,
    RejectReason,
    Session,
    Stage,
    StatusClass,
    Target,
    answer_offers,
    check_login_answer,
    decode_keys,
    first_value,
    initiator_name,
    login_request,
    logout_request,
    parse_header,
    parse_pdu,
    random_isid,
    read_login_response,
    read_logout_response,
    read_reject,
    read_send_targets,
    read_text_response,
    spec_name,
    text_request,
)
from probes.net import Connection, connect

# Login Requests sent before giving up on an agreement; a plain
# discovery login takes two (security, then operational stage).
MAX_LOGIN_ROUNDS = 8
# Text Requests sent for one SendTargets answer (each further one asks
# for the rest, RFC 7143 11.10.4).
MAX_TEXT_ROUNDS = 16
# The whole SendTargets answer, over all its PDUs.
MAX_TEXT_BYTES = 256 * 1024
# Unsolicited PDUs (NOP-In pings, asynchronous messages) skipped while
# waiting for an answer.
MAX_STRAY_PDUS = 8
# Seconds given to the polite Logout at the end, out of what is left.
LOGOUT_WAIT = 1.0
# Bytes kept for the first_bytes evidence; also the least asked of each
# read, so a short banner comes whole in one.
_FIRST_BYTES = 64
_AUTH_STATUSES = frozenset(
    {LoginStatus.AUTHENTICATION_FAILURE, LoginStatus.AUTHORIZATION_FAILURE}
)


@dataclass
class _Plan:
    """One probe's names and counters (RFC 7143 4.2.7, 11.12)."""

    name: str
    session: Session
    itt: int
    cmd_sn: int = 1
    exp_stat_sn: int = 0
    step: str = "login"

    @classmethod
    def fresh(cls, random: bytes | None = None) -> _Plan:
        """A new InitiatorName, ISID and first task tag from 13 random
        bytes: 4 for the name, 5 for the ISID, 4 for the tag."""
        random = random if random is not None else secrets.token_bytes(13)
        itt = int.from_bytes(random[9:13], "big") & 0x7FFFFFFF
        return cls(
            name=initiator_name(random[:4].hex()),
            session=Session(random_isid(random[4:9])),
            itt=itt,
        )

    def next_itt(self) -> int:
        self.itt = (self.itt + 1) & 0x7FFFFFFF
        return self.itt


def first_keys(name: str) -> Keys:
    """The first Login Request's text (RFC 7143 6.1, 12.1, 13.5, 13.21)."""
    return (
        ("InitiatorName", name),
        ("InitiatorAlias", "sgw-reach"),
        ("SessionType", "Discovery"),
        ("AuthMethod", "None,CHAP"),
    )


OPERATIONAL_KEYS: Keys = (
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("MaxRecvDataSegmentLength", str(MAX_DATA_SEGMENT)),
)
"""The operational stage's offer (RFC 7143 13.1, 13.12)."""


# Login outcomes, decided by the pure step function below.


@dataclass(frozen=True)
class LoggedIn:
    tsih: int
    keys: Keys


@dataclass(frozen=True)
class AuthRequired:
    """The target chose an authentication method other than None."""

    method: str


@dataclass(frozen=True)
class Refused:
    """A Login Response with a status other than success."""

    response: LoginResponse
    keys: Keys


@dataclass(frozen=True)
class Rejected:
    reject: Reject


@dataclass(frozen=True)
class Continue:
    """Send another Login Request."""

    csg: Stage
    nsg: Stage
    transit: bool
    keys: Keys


LoginStep = LoggedIn | AuthRequired | Refused | Continue


@dataclass
class Negotiation:
    """Where the login stands: the stage, and what is gathered of a text
    split over several Login Responses (the C bit, RFC 7143 11.13.7)."""

    stage: Stage = Stage.SECURITY_NEGOTIATION
    sent: Keys = ()
    pending: bytes = b""


def login_step(state: Negotiation, response: LoginResponse, data: bytes) -> LoginStep:
    """Decide what follows one Login Response (RFC 7143 6.2, 6.3)."""
    if response.status != LoginStatus.SUCCESS:
        return Refused(response, _lenient_keys(data))
    if response.more:
        state.pending += data
        if len(state.pending) > MAX_TEXT_BYTES:
            raise IscsiError("the login text runs past its bound")
        return Continue(state.stage, _next(state.stage), False, ())
    if response.csg != state.stage:
        raise IscsiError(
            f"a Login Response for stage {response.csg} in stage {state.stage}"
        )
    keys = decode_keys(state.pending + data)
    state.pending = b""
    method = first_value(keys, "AuthMethod")
    security = state.stage is Stage.SECURITY_NEGOTIATION
    if security and method is not None and method != "None":
        return AuthRequired(method)
    if not response.transit:
        answers = answer_offers(state.sent, keys)
        return Continue(state.stage, _next(state.stage), True, answers)
    if response.nsg == Stage.FULL_FEATURE_PHASE:
        return LoggedIn(response.tsih, keys)
    if response.nsg != Stage.LOGIN_OPERATIONAL_NEGOTIATION or (
        state.stage is not Stage.SECURITY_NEGOTIATION
    ):
        raise IscsiError(f"a Login Response moving to stage {response.nsg}")
    state.stage = Stage.LOGIN_OPERATIONAL_NEGOTIATION
    state.sent = OPERATIONAL_KEYS
    return Continue(state.stage, Stage.FULL_FEATURE_PHASE, True, OPERATIONAL_KEYS)


def _next(stage: Stage) -> Stage:
    if stage is Stage.SECURITY_NEGOTIATION:
        return Stage.LOGIN_OPERATIONAL_NEGOTIATION
    return Stage.FULL_FEATURE_PHASE


def _lenient_keys(data: bytes) -> Keys:
    """The text of a failed login, when it decodes; a failure is told by
    its status, so a broken text there does not hide it."""
    try:
        return decode_keys(data)
    except IscsiError:
        return ()


# I/O.


class _Closed(Exception):
    """The target closed the connection."""


class _Wire:
    """PDUs over a stream, each read bounded by its header's lengths."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.head = bytearray()
        self.pdus = 0
        self.sent_at: float | None = None
        self.rtt_ms: float | None = None

    async def send(self, data: bytes) -> None:
        # A peer that already hung up (an SSH server done with us) is
        # judged by what it sent; the read that follows finds the end.
        if self.sent_at is None:
            self.sent_at = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    async def pdu(self) -> Pdu:
        await self._fill(BHS_SIZE)
        header = parse_header(bytes(self.buffer[:BHS_SIZE]))
        size = BHS_SIZE + header.total_length
        await self._fill(size)
        wire = bytes(self.buffer[:size])
        del self.buffer[:size]
        if self.pdus == 0 and self.sent_at is not None:
            elapsed = asyncio.get_running_loop().time() - self.sent_at
            self.rtt_ms = round(elapsed * 1000, 1)
        self.pdus += 1
        return parse_pdu(wire)

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            try:
                chunk = await self.reader.read(
                    max(size - len(self.buffer), _FIRST_BYTES)
                )
            except ConnectionError:
                chunk = b""
            if not chunk:
                raise _Closed
            self.head += chunk[: _FIRST_BYTES - len(self.head)]
            self.buffer += chunk
            if self.pdus == 0:
                check_login_answer(bytes(self.buffer))

    async def answer(self, itt: int) -> Pdu:
        """The next PDU for task ``itt``, or a Reject of it, skipping a
        few unsolicited ones (RFC 7143 11.19, 11.9)."""
        for _ in range(MAX_STRAY_PDUS + 1):
            pdu = await self.pdu()
            if pdu.opcode == Opcode.REJECT:
                reject = read_reject(pdu)
                if reject.rejected_itt not in (None, itt):
                    raise IscsiError("a Reject of a PDU this probe never sent")
                return pdu
            if pdu.header.itt == itt:
                return pdu
            if pdu.header.itt != RESERVED_TAG or pdu.opcode not in (
                Opcode.NOP_IN,
                Opcode.ASYNCHRONOUS_MESSAGE,
            ):
                tag = pdu.header.itt
                raise IscsiError(f"an answer for task 0x{tag:08x}, not 0x{itt:08x}")
        raise IscsiError(f"more than {MAX_STRAY_PDUS} unsolicited PDUs")


async def _login(wire: _Wire, plan: _Plan) -> LoginStep | Rejected:
    state = Negotiation(sent=first_keys(plan.name))
    step: Continue = Continue(
        Stage.SECURITY_NEGOTIATION,
        Stage.LOGIN_OPERATIONAL_NEGOTIATION,
        True,
        state.sent,
    )
    for _ in range(MAX_LOGIN_ROUNDS):
        await wire.send(
            login_request(
                plan.session,
                itt=plan.itt,
                cmd_sn=plan.cmd_sn,
                exp_stat_sn=plan.exp_stat_sn,
                csg=step.csg,
                nsg=step.nsg,
                transit=step.transit,
                keys=step.keys,
            )
        )
        pdu = await wire.answer(plan.itt)
        if pdu.opcode == Opcode.REJECT:
            return Rejected(read_reject(pdu))
        response = read_login_response(pdu)
        plan.exp_stat_sn = (response.stat_sn + 1) & 0xFFFFFFFF
        result = login_step(state, response, pdu.data)
        if not isinstance(result, Continue):
            return result
        step = result
    raise IscsiError(f"no login agreement in {MAX_LOGIN_ROUNDS} rounds")


async def _send_targets(wire: _Wire, plan: _Plan) -> tuple[Target, ...] | Rejected:
    """SendTargets=All, following the Target Transfer Tag for the rest
    of a long answer (RFC 7143 11.10.4, 11.11.4)."""
    plan.step = "SendTargets"
    itt = plan.next_itt()
    ttt = RESERVED_TAG
    keys: Keys = (("SendTargets", "All"),)
    data = b""
    for _ in range(MAX_TEXT_ROUNDS):
        await wire.send(
            text_request(
                itt=itt,
                ttt=ttt,
                cmd_sn=plan.cmd_sn,
                exp_stat_sn=plan.exp_stat_sn,
                keys=keys,
            )
        )
        plan.cmd_sn = (plan.cmd_sn + 1) & 0xFFFFFFFF
        pdu = await wire.answer(itt)
        if pdu.opcode == Opcode.REJECT:
            return Rejected(read_reject(pdu))
        response = read_text_response(pdu)
        plan.exp_stat_sn = (response.stat_sn + 1) & 0xFFFFFFFF
        data += response.data
        if len(data) > MAX_TEXT_BYTES:
            raise IscsiError(f"a SendTargets answer past {MAX_TEXT_BYTES} bytes")
        if response.final:
            return _targets(decode_keys(data))
        if response.ttt == RESERVED_TAG:
            raise IscsiError("a Text Response that continues without a TTT")
        ttt, keys = response.ttt, ()
    raise IscsiError(f"a SendTargets answer longer than {MAX_TEXT_ROUNDS} PDUs")


def _targets(keys: Keys) -> tuple[Target, ...]:
    answer = first_value(keys, "SendTargets")
    if answer is not None:
        raise IscsiError(f"the target answered SendTargets={answer}")
    return read_send_targets(keys)


async def _logout(wire: _Wire, plan: _Plan, request: ProbeRequest) -> bool:
    """Close the session politely; True when the target confirmed."""
    plan.step = "logout"
    itt = plan.next_itt()
    loop = asyncio.get_running_loop()
    until = min(loop.time() + LOGOUT_WAIT, request.deadline.when)
    try:
        async with asyncio.timeout_at(until):
            await wire.send(
                logout_request(
                    plan.session,
                    itt=itt,
                    cmd_sn=plan.cmd_sn,
                    exp_stat_sn=plan.exp_stat_sn,
                )
            )
            pdu = await wire.answer(itt)
            # RFC 7143 11.15.1: response 0, the session is closed; a
            # Reject or another PDU raises IscsiError.
            return read_logout_response(pdu) == 0
    except (TimeoutError, IscsiError, _Closed):
        return False


# The probe.


@dataclass
class _Run:
    conn: Connection
    port: int
    plan: _Plan
    wire: _Wire

    @property
    def where(self) -> str:
        return f"{self.conn.address} TCP {self.port}"

    def evidence(self, **extra: JSONValue) -> dict[str, JSONValue]:
        found: dict[str, JSONValue] = {
            "connect_ms": self.conn.connect_ms,
            "rtt_ms": self.wire.rtt_ms,
            "initiator_name": self.plan.name,
            "isid": self.plan.session.isid.hex(),
        }
        found.update(extra)
        return found


async def probe(request: ProbeRequest) -> Outcome:
    """Log in for discovery, list the targets, log out."""
    conn = await connect(request)
    if isinstance(conn, Outcome):
        return conn
    address = conn.address
    request.log.debug("iscsi.connected", connect_ms=conn.connect_ms)
    reader, writer = await conn.streams()
    run = _Run(conn, request.port, _Plan.fresh(), _Wire(reader, writer))
    try:
        return (await _exchange(run, request)).at(address)
    finally:
        writer.close()


async def _exchange(run: _Run, request: ProbeRequest) -> Outcome:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout_at(request.deadline.when):
            found = await _discover(run, request)
    except TimeoutError:
        return _silent(run, loop.time() - started)
    except NotIscsiError:
        return _wrong_protocol(run)
    except _Closed:
        return _closed(run)
    except IscsiError as exc:
        return _malformed(run, exc)
    if isinstance(found, Outcome):
        return found
    # Out of the main deadline's block: the Logout has its own, shorter
    # one, and its failure changes no verdict.
    logged_out = await _logout(run.wire, run.plan, request)
    request.log.debug("iscsi.logout", logged_out=logged_out)
    return _listed(run, *found, logged_out)


async def _discover(
    run: _Run, request: ProbeRequest
) -> Outcome | tuple[LoggedIn, tuple[Target, ...]]:
    """Log in and list the targets; an Outcome when that cannot be."""
    login = await _login(run.wire, run.plan)
    request.log.debug("iscsi.login", result=type(login).__name__)
    if not isinstance(login, LoggedIn):
        return _not_logged_in(run, login)
    targets = await _send_targets(run.wire, run.plan)
    if isinstance(targets, Rejected):
        return _rejected(run, targets.reject)
    request.log.debug("iscsi.targets", count=len(targets))
    return login, targets


# Verdicts.


def status_evidence(status: int) -> dict[str, JSONValue]:
    """A login status by its RFC 7143 11.13.5 names."""
    return {
        "class": spec_name(StatusClass, status >> 8),
        "detail": spec_name(LoginStatus, status),
        "code": f"{status:04x}",
    }


def _listed(
    run: _Run, login: LoggedIn, targets: tuple[Target, ...], logged_out: bool
) -> Outcome:
    amazon = any(target.amazon for target in targets)
    evidence = run.evidence(
        status=status_evidence(LoginStatus.SUCCESS),
        chap_required=False,
        tsih=login.tsih,
        targets=[
            {"name": t.name, "portals": [str(p) for p in t.portals]} for t in targets
        ],
        amazon_targets=amazon,
        logged_out=logged_out,
        portals_elsewhere=elsewhere_portals(targets, run.conn.address),
    )
    if amazon:
        count = sum(target.amazon for target in targets)
        detail = (
            f"an iSCSI target answers on {run.where} and lists {count} "
            "Storage Gateway target(s)"
        )
    elif targets:
        detail = (
            f"an iSCSI target answers on {run.where}, but none of its "
            f"{len(targets)} target(s) is a Storage Gateway's "
            f"({targets[0].name}, ...): a wrong host, or a lab"
        )
    else:
        detail = (
            f"an iSCSI target answers on {run.where} but lists no targets: "
            "a gateway with no volumes yet, or not a Storage Gateway"
        )
    return passed(detail + _portal_note(targets, run.conn.address), **evidence)


def elsewhere_portals(targets: tuple[Target, ...], address: str) -> list[str]:
    """The portals targets name when none of them is the address probed.

    Initiators connect to the listed portals after discovery; a gateway
    behind NAT lists its own inside address, which they may not reach.
    """
    portals = [p for target in targets for p in target.portals]
    if not portals or any(p.address == address for p in portals):
        return []
    return sorted({str(p) for p in portals})


def _portal_note(targets: tuple[Target, ...], address: str) -> str:
    elsewhere = elsewhere_portals(targets, address)
    if not elsewhere:
        return ""
    return (
        f"; note: the targets name portal {elsewhere[0]}, not {address}: "
        "initiators connect there next, so it must be reachable too (NAT?)"
    )


def _not_logged_in(run: _Run, login: LoginStep | Rejected) -> Outcome:
    if isinstance(login, AuthRequired):
        return _auth_required(run, login.method, None)
    if isinstance(login, Rejected):
        return _rejected(run, login.reject)
    assert isinstance(login, Refused)
    status = login.response.status
    if status in _AUTH_STATUSES:
        method = first_value(login.keys, "AuthMethod")
        return _auth_required(run, method, status)
    if login.response.status_class == StatusClass.REDIRECTION:
        return _redirected(run, login)
    return _refused(run, login.response)


def _auth_required(run: _Run, method: str | None, status: int | None) -> Outcome:
    chap = status == LoginStatus.AUTHENTICATION_FAILURE or method == "CHAP"
    code = LoginStatus.SUCCESS if status is None else status
    evidence = run.evidence(
        status=status_evidence(code),
        chap_required=chap,
        auth_method=method,
        tsih=None,
        targets=[],
        amazon_targets=None,
    )
    if status == LoginStatus.AUTHORIZATION_FAILURE:
        detail = (
            f"an iSCSI target answers on {run.where} and refuses this "
            "probe's initiator name (authorization failure): its access "
            "list decides who may discover targets"
        )
    elif chap:
        detail = (
            f"an iSCSI target answers on {run.where}; CHAP required for "
            "discovery, so its targets were not listed"
        )
    elif method in ("Reject", "NotUnderstood", "Irrelevant"):
        detail = (
            f"an iSCSI target answers on {run.where} and takes neither "
            f"AuthMethod None nor CHAP for discovery ({method})"
        )
    else:
        detail = (
            f"an iSCSI target answers on {run.where} and asks for "
            f"authentication ({method}) before discovery"
        )
    return passed(detail, **evidence)


def _redirected(run: _Run, login: Refused) -> Outcome:
    where = first_value(login.keys, "TargetAddress")
    return passed(
        f"an iSCSI portal answers on {run.where} and redirects discovery "
        f"to {where or 'an address it did not name'} "
        f"({spec_name(LoginStatus, login.response.status)}); Storage "
        "Gateway does not redirect, and the targets there were not listed",
        **run.evidence(
            status=status_evidence(login.response.status),
            redirect=where,
            chap_required=None,
            tsih=None,
            targets=[],
            amazon_targets=None,
        ),
    )


def _refused(run: _Run, response: LoginResponse) -> Outcome:
    name = spec_name(LoginStatus, response.status)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the iSCSI target on {run.where} refused a discovery login: "
        f"{name} (status {response.status:04x})",
        "An iSCSI target answers, but not as a Storage Gateway does: "
        "check that this address is the gateway's, and its iSCSI "
        "service is up.",
        **run.evidence(status=status_evidence(response.status), tsih=None),
    )


def _rejected(run: _Run, reject: Reject) -> Outcome:
    reason = spec_name(RejectReason, reject.reason)
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the iSCSI target on {run.where} rejected the {run.plan.step} "
        f"request (Reject PDU, {reason})",
        "An iSCSI target answers but refuses a standard discovery "
        "session: check that this address is the gateway's.",
        **run.evidence(reject_reason=reason, step=run.plan.step),
    )


def _wrong_protocol(run: _Run) -> Outcome:
    head = bytes(run.wire.head)
    return failed(
        Reason.WRONG_PROTOCOL,
        f"{run.where} answered with something that is not iSCSI: "
        + printable(head, 32),
        "Something other than an iSCSI target answers on this port: "
        "check that the address is the gateway's and that nothing "
        "forwards the port elsewhere.",
        **run.evidence(first_bytes=printable(head)),
    )


def _closed(run: _Run) -> Outcome:
    if run.wire.head and run.wire.pdus == 0:
        return _wrong_protocol(run)
    if run.wire.pdus == 0:
        return failed(
            Reason.WRONG_PROTOCOL,
            f"{run.where} closed the connection without an iSCSI answer",
            "Something other than an iSCSI target holds this port (an "
            "iSCSI target with no targets at all may also hang up at "
            "once, as tgt does): check the address and the gateway's "
            "volumes.",
            **run.evidence(first_bytes=""),
        )
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the iSCSI target on {run.where} closed the connection during "
        f"the {run.plan.step} exchange",
        _REMEDY_MALFORMED,
        **run.evidence(step=run.plan.step),
    )


_REMEDY_MALFORMED = (
    "An iSCSI target answers but not as RFC 7143 asks: check that this "
    "address is the gateway's, not another device's."
)


def _malformed(run: _Run, error: IscsiError) -> Outcome:
    return failed(
        Reason.PROTOCOL_ERROR,
        f"the iSCSI target on {run.where} sent a malformed answer during "
        f"the {run.plan.step} exchange: {error}",
        _REMEDY_MALFORMED,
        **run.evidence(
            first_bytes=printable(bytes(run.wire.head)),
            step=run.plan.step,
        ),
    )


def _silent(run: _Run, waited_s: float) -> Outcome:
    waited = round(waited_s, 1)
    evidence = run.evidence(waited_s=waited, step=run.plan.step)
    if run.wire.pdus == 0 and run.wire.head:
        return _wrong_protocol(run)
    if run.wire.pdus == 0:
        detail = (
            f"the TCP connection to {run.where} opened but no iSCSI reply "
            f"came in {waited} s"
        )
    else:
        detail = (
            f"the iSCSI target on {run.where} stopped answering during "
            f"{run.plan.step} (waited {waited} s)"
        )
    return failed(
        Reason.TIMEOUT, detail, held_open("the iSCSI target", run.where), **evidence
    )
