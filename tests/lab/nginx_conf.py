"""The one nginx configuration that plays every HTTP(S) part of the lab.

A single nginx master serves:

* the four HTTPS servers (good, inspecting CA, expired, wrong name),
  each with one certificate carrying all its names;
* plain HTTP on 10.231.0.23:22, so an SSH client gets an HTTP 400
  instead of an SSH banner;
* the healthy gateway on 10.231.0.80:80 (activation answers; its
  storage ports belong to real servers, see `storage`);
* the broken gateway on 10.231.0.81:80.

Limits: canned answers only; the activation answer imitates the
gateway's redirect, not its pages.
"""

from __future__ import annotations

from pathlib import Path

from . import topology
from .certs import Pki

_TLS_ROLES: dict[str, str] = {
    topology.TLS_GOOD: "good",
    topology.TLS_INSPECT: "inspecting-ca",
    topology.TLS_EXPIRED: "expired",
    topology.TLS_WRONG_NAME: "wrong-name",
}


def _main(workdir: Path) -> str:
    temp = workdir / "nginx"
    return f"""\
daemon off;
master_process on;
worker_processes 1;
# Workers as root: the work directory is private to root.
user root root;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/nginx.log info;
events {{ worker_connections 512; }}
http {{
    access_log {workdir}/logs/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;
    server_tokens off;
    keepalive_timeout 5;
    ssl_protocols TLSv1.2 TLSv1.3;
"""


def _tls_server(address: str, pki: Pki) -> str:
    leaf = pki.leaves[address]
    role = _TLS_ROLES[address]
    return f"""\
    server {{
        listen {address}:443 ssl;
        ssl_certificate {leaf.cert};
        ssl_certificate_key {leaf.key};
        location / {{ return 200 "lab https {role}\\n"; }}
    }}
"""


def _not_ssh_server() -> str:
    # nginx reads the client's "SSH-2.0-..." line as a bad request line
    # and answers 400, which is the garbage an SSH client must notice.
    return f"""\
    server {{
        listen {topology.NOT_SSH}:22;
        location / {{ return 200 "not ssh\\n"; }}
    }}
"""


def _gateway_server() -> str:
    key = topology.ACTIVATION_KEY
    default_region = topology.DEFAULT_ACTIVATION_REGION
    # `no_redirect` comes as a bare key without "=", so $arg_no_redirect
    # cannot tell it apart from absent: match the whole query instead.
    return f"""\
    server {{
        listen {topology.GATEWAY}:80;
        location = / {{
            if ($args ~ "(^|&)no_redirect(=|&|$)") {{
                return 200 "{key}";
            }}
            set $region {default_region};
            if ($arg_activationRegion) {{
                set $region $arg_activationRegion;
            }}
            return 302 "http://lab.test/?activationKey={key}\
&activationRegion=$region";
        }}
        location / {{ return 404; }}
    }}
"""


def _broken_gateway_server() -> str:
    body = topology.BROKEN_GATEWAY_BODY
    return f"""\
    server {{
        listen {topology.GATEWAY_BROKEN}:80;
        location / {{ return 200 "{body}"; }}
    }}
"""


def render(workdir: Path, pki: Pki) -> str:
    """The complete nginx.conf text."""
    parts = [_main(workdir)]
    parts += [_tls_server(address, pki) for address in _TLS_ROLES]
    parts += [
        _not_ssh_server(),
        _gateway_server(),
        _broken_gateway_server(),
        "}\n",
    ]
    return "".join(parts)
