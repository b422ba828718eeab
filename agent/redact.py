"""Take secrets out of text and JSON-like data before it leaves the host.

What is replaced by ``REDACTED``:

- the password of a URL (``scheme://user:pass@host`` keeps the user), or
  the whole user part when there is no password (a token as user name);
- the value of a query parameter, ``NAME=value`` pair, JSON member or
  mapping key whose name looks secret (``token``, ``key``, ``sig``,
  ``password``, ``secret``, ``credential``, ``auth``,
  ``signature``, ``jwt``, ``sid``, ``sessionid``...,
  as in ``X-Amz-Signature``, ``activationKey`` or ``AWS_SECRET_ACCESS_KEY``),
  unless its last word says it is not the secret itself (``key_prefix``,
  ``AuthMethod``, ``token_type``, ``SSH_AUTH_SOCK``);
- the value after ``aws_secret_access_key`` and the like, in any notation;
- the credentials of ``Authorization``, ``Proxy-Authorization``,
  ``Cookie`` and ``X-Amz-Security-Token`` headers, to the end of the line
  (the scheme, such as ``Basic``, is kept);
- the password of a proxy setting written without a scheme
  (``proxy=user:password@host``), and a ``Bearer`` token anywhere in free
  text;
- AWS access key ids (``AKIA`` or ``ASIA`` and 16 more characters);
- Storage Gateway activation keys (five groups of five), all but their
  first group, as the report itself shows them.

Limits: it works on patterns, so a secret with no telling name or shape
(a bare password in free text) passes, and some harmless values that only
look like secrets are replaced too; that is the side it errs on. A
header's value is taken to the end of its line, or to an escaped ``\\r``
or ``\\n`` as the report's evidence writes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "REDACTED"

# Words that make a name secret; the name is split into words at
# punctuation and at lower-to-upper case changes.
_SECRET_WORDS = frozenset(
    {"key", "sig", "auth", "pass", "token", "secret", "jwt", "sid"}
)
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "signature",
    "authorization",
    "apikey",
    "accesskey",
    "privatekey",
    "sessionid",
)
# A last word that names something about the secret, not the secret.
_NOT_SECRET_LAST = frozenset(
    {
        "count",
        "dir",
        "file",
        "found",
        "id",
        "len",
        "length",
        "method",
        "methods",
        "mode",
        "name",
        "path",
        "prefix",
        "scheme",
        "size",
        "sock",
        "type",
        "types",
    }
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

_HEADER = re.compile(
    r"(?i)\b(?P<name>(?:proxy-)?authorization|set-cookie|cookie"
    r"|x-amz-security-token)(?P<sep>[ \t]*:[ \t]*)"
    r"(?P<scheme>(?:basic|bearer|digest|negotiate|ntlm|aws4-hmac-sha256)"
    r"[ \t]+)?"
    r"(?P<value>(?:[^\r\n\\]|\\(?![rn]))+)"
)
_URL_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<userinfo>[^\s/?#\"'<>\\]*)@"
)
_AWS_SECRET = re.compile(
    r"(?i)(?P<name>aws_?secret(?:_?access)?_?key|secret_?access_?key)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[A-Za-z0-9/+=]+)"
)
# A JSON or Python member's name and colon, found without consuming
# them, so a member that is not secret cannot hide the next one.
_MEMBER_NAME = re.compile(r"(?=(?P<open>(?P<q>[\"'])(?P<name>[\w.\-]+)(?P=q)\s*:\s*))")
_MEMBER_VALUE = re.compile(
    r"\"(?P<value_dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<value_sq>[^'\n]*)'"
)
# ``NAME=value``: a query parameter, an environment or configuration line.
_PAIR_NAME = re.compile(r"(?P<open>(?P<name>[A-Za-z_][\w.\-]*)[ \t]*=[ \t]*)")
_PAIR_VALUE = re.compile(
    r"\"(?P<value_dq>(?:[^\"\\\n]|\\.)*)\"|'(?P<value_sq>[^'\n]*)'"
    r"|(?P<value_bare>(?:[^\s&\"'<>\\]|\\(?![rnt\"]))+)"
)
# A proxy setting without a scheme, ``https_proxy=user:password@host``,
# as a log line or a configuration file may quote it.
_BARE_USERINFO = re.compile(
    r"(?i)(?P<open>\b[\w.\-]*proxy[\w.\-]*[\"']?[ \t]*[=:][ \t]*[\"']?)"
    r"(?P<user>[^\s:@/\"']+):(?P<password>[^\s@/\"']+)@"
)
# A bearer token outside any header: ``Bearer eyJ...``.
_BEARER = re.compile(r"(?P<scheme>\bBearer[ \t]+)(?P<token>[\w\-.~+/]+=*)")
_ACCESS_KEY_ID = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
_ACTIVATION_KEY = re.compile(r"(?P<first>[A-Z0-9]{5})(?:-[A-Z0-9]{5}){4}")


def secret_name(name: str) -> bool:
    """Whether a variable, parameter or field called ``name`` holds a
    secret: ``X-Amz-Signature``, ``activationKey``, ``DB_PASSWORD``."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or words[-1] in _NOT_SECRET_LAST:
        return False
    if any(word in _SECRET_WORDS for word in words):
        return True
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS)


def redact_text(text: str) -> str:
    """``text`` with every secret it shows replaced."""
    text = _HEADER.sub(_header, text)
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _BARE_USERINFO.sub(_bare_userinfo, text)
    text = _BEARER.sub(_bearer, text)
    text = _AWS_SECRET.sub(r"\g<name>\g<sep>" + REDACTED, text)
    text = _redact_values(text, _MEMBER_NAME, _MEMBER_VALUE)
    text = _redact_values(text, _PAIR_NAME, _PAIR_VALUE)
    text = _ACCESS_KEY_ID.sub(REDACTED, text)
    return _ACTIVATION_KEY.sub(r"\g<first>-" + REDACTED, text)


def _header(match: re.Match[str]) -> str:
    scheme = match["scheme"] or ""
    return f"{match['name']}{match['sep']}{scheme}{REDACTED}"


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    kept = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{match['scheme']}{kept}@"


def _bare_userinfo(match: re.Match[str]) -> str:
    if match["password"] == REDACTED:
        return match[0]
    return f"{match['open']}{match['user']}:{REDACTED}@"


def _bearer(match: re.Match[str]) -> str:
    if match["token"] == REDACTED:
        return match[0]
    return f"{match['scheme']}{REDACTED}"


def _redact_values(text: str, opening: re.Pattern[str], value: re.Pattern[str]) -> str:
    """Replace the value after each ``opening`` whose name looks secret."""
    out: list[str] = []
    done = 0
    for found in opening.finditer(text):
        if found.start() < done or not secret_name(found["name"]):
            continue
        span = _value_span(value.match(text, found.end("open")))
        if span is None:
            continue
        out += [text[done : span[0]], REDACTED]
        done = span[1]
    out.append(text[done:])
    return "".join(out)


def _value_span(found: re.Match[str] | None) -> tuple[int, int] | None:
    """Where the value is, inside its quotes if it has them."""
    if found is None:
        return None
    for group, content in found.groupdict().items():
        if content is not None and content not in ("", REDACTED):
            return found.span(group)
    return None


def redact(value: Any) -> Any:
    """A copy of JSON-like ``value`` (mappings, lists, strings, numbers)
    with the secrets replaced: in every string, and as the whole value of
    a member whose name looks secret (numbers and strings alike)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            redact_text(k) if isinstance(k, str) else k: _member(k, v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _member(name: object, value: Any) -> Any:
    secret = isinstance(name, str) and secret_name(name)
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    if secret and scalar and value != "":
        return REDACTED
    return redact(value)


def redact_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables with the secrets taken out: the whole value
    of a variable whose name looks secret, and secrets inside the others
    (a proxy URL's password, with or without its scheme)."""
    clean: dict[str, str] = {}
    for name, value in environ.items():
        if secret_name(name) and value:
            clean[name] = REDACTED
        else:
            clean[name] = redact_text(_schemeless_userinfo(value))
    return clean


def _schemeless_userinfo(value: str) -> str:
    """``user:pass@proxy:3128`` (a proxy variable without its scheme)."""
    if "://" in value or "@" not in value:
        return value
    userinfo, _at, rest = value.rpartition("@")
    if not rest or any(c in userinfo for c in " /"):
        return value
    user, colon, _password = userinfo.partition(":")
    kept = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{kept}@{rest}"
