"""Redaction: each kind of secret, the names that are not secrets, and a
planted secret that never survives whatever text surrounds it."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.redact import (
    REDACTED,
    redact,
    redact_environ,
    redact_text,
    secret_name,
)

CASES = [
    (
        "proxy http://user:s3cr3tPa55@proxy:3128 refused",
        "proxy http://user:REDACTED@proxy:3128 refused",
    ),
    ("https://p@ss:w@rd@h/x", "https://p@ss:REDACTED@h/x"),
    ("git https://ghp_token123@github.com/o/r", "git https://REDACTED@github.com/o/r"),
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F2024&"
        "X-Amz-Signature=ab12&X-Amz-Security-Token=FQo&x=1",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=REDACTED&"
        "X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED&x=1",
    ),
    (
        "Location: http://gw/?activationRegion=eu-west-1&activationKey=K1",
        "Location: http://gw/?activationRegion=eu-west-1&activationKey=REDACTED",
    ),
    ("?token=abc&sig=def&key=ghi", "?token=REDACTED&sig=REDACTED&key=REDACTED"),
    ("password='two words' next", "password='REDACTED' next"),
    ('DB_PASSWORD="x y" PATH=/bin', 'DB_PASSWORD="REDACTED" PATH=/bin'),
    ("id AKIAIOSFODNN7EXAMPLE here", "id REDACTED here"),
    ("id ASIAIOSFODNN7EXAMPLE", "id REDACTED"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = REDACTED",
    ),
    (
        '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        '{"SecretAccessKey": "REDACTED"}',
    ),
    (
        "CONNECT h:443 HTTP/1.1\\r\\nProxy-Authorization: Basic dTpw\\r\\nHost: h",
        "CONNECT h:443 HTTP/1.1\\r\\nProxy-Authorization: Basic REDACTED\\r\\nHost: h",
    ),
    (
        "authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=ff\nnext",
        "authorization: AWS4-HMAC-SHA256 REDACTED\nnext",
    ),
    ("Cookie: session=abc", "Cookie: REDACTED"),
    (
        "key ABCDE-12345-FGHIJ-67890-KLMNO issued",
        "key ABCDE-REDACTED issued",
    ),
    ('{"token": "t", "name": "n"}', '{"token": "REDACTED", "name": "n"}'),
    ("{'api_key': 'k'}", "{'api_key': 'REDACTED'}"),
    ("proxy=alice:hunter2@proxy:3128", "proxy=alice:REDACTED@proxy:3128"),
    ('"https_proxy": "bob:pw@p:8"', '"https_proxy": "bob:REDACTED@p:8"'),
    ("sent Bearer eyJhbGciOi.x-y_z== then", "sent Bearer REDACTED then"),
    (
        "/x?jwt=abc&sessionid=zz&sid=q",
        "/x?jwt=REDACTED&sessionid=REDACTED&sid=REDACTED",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_each_kind_of_secret(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "AuthMethod=CHAP key_prefix=ABCDE token_type=bearer",
        "the gateway at 10.0.0.5:80 issued activation key ABCDE-...",
        "http://proxy:3128/ and mailto:a@b",
        "SendTargets=All TargetName=iqn.1997-05.com.amazon:x",
        "design=1 keyboard layout",
        "",
    ],
)
def test_what_is_not_a_secret_stays(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("PASSWORD", True),
        ("GITHUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("aws_session_token", True),
        ("X-Amz-Signature", True),
        ("X-Amz-Credential", True),
        ("activationKey", True),
        ("sig", True),
        ("BASIC_AUTH", True),
        ("HTTPS_PROXY", False),
        ("SSH_AUTH_SOCK", False),
        ("key_prefix", False),
        ("AuthMethod", False),
        ("PWD", False),
        ("PATH", False),
        ("region", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_structures_keep_their_shape() -> None:
    value = {
        "password": 1234,
        "key_found": True,
        "key_prefix": "ABCDE",
        "api_key": "",
        "nested": [{"url": "socks5://u:p@h:1080"}, ("AKIAIOSFODNN7EXAMPLE",)],
        "http://u:p@h": None,
    }
    assert redact(value) == {
        "password": REDACTED,
        "key_found": True,
        "key_prefix": "ABCDE",
        "api_key": "",
        "nested": [{"url": "socks5://u:REDACTED@h:1080"}, [REDACTED]],
        "http://u:REDACTED@h": None,
    }


def test_environment_variables() -> None:
    clean = redact_environ(
        {
            "HTTPS_PROXY": "http://user:s3cr3tPa55@proxy:3128",
            "http_proxy": "user:s3cr3tPa55@proxy:3128",
            "no_proxy": "169.254.169.254,.internal",
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "MY_TOKEN": "t",
            "EMPTY_PASSWORD": "",
        }
    )
    assert clean == {
        "HTTPS_PROXY": "http://user:REDACTED@proxy:3128",
        "http_proxy": "user:REDACTED@proxy:3128",
        "no_proxy": "169.254.169.254,.internal",
        "AWS_SECRET_ACCESS_KEY": REDACTED,
        "MY_TOKEN": REDACTED,
        "EMPTY_PASSWORD": "",
    }


# A secret and the context that makes it one; the secret is what must go.
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
secrets = st.text(ALNUM, min_size=12, max_size=40)
CONTEXTS = [
    "https://user:{}@proxy:3128/",
    "socks5://{}@proxy",
    "https://b.s3.amazonaws.com/o?X-Amz-Signature={}&X-Amz-Date=20240101",
    "http://gw/?activationRegion=us-east-1&activationKey={}",
    "?token={}",
    "AWS_SECRET_ACCESS_KEY={}",
    "aws_secret_access_key: {}",
    '"password": "{}"',
    "Authorization: Bearer {}",
    "Proxy-Authorization: Basic {}",
]
separators = st.sampled_from([" ", "\n", "\t", "\r\n"])


@settings(max_examples=300)
@given(
    context=st.sampled_from(CONTEXTS),
    secret=secrets,
    before=st.text(),
    after=st.text(),
    gaps=st.tuples(separators, separators),
)
def test_a_planted_secret_never_survives(
    context: str, secret: str, before: str, after: str, gaps: tuple[str, str]
) -> None:
    assume(secret not in before + after)
    text = before + gaps[0] + context.format(secret) + gaps[1] + after
    assert secret not in redact_text(text)


@settings(max_examples=200)
@given(
    key=st.one_of(
        st.text(UPPER, min_size=16, max_size=16).map(lambda s: "AKIA" + s),
        st.lists(st.text(UPPER, min_size=5, max_size=5), min_size=5, max_size=5).map(
            "-".join
        ),
    ),
    before=st.text(),
    after=st.text(),
    gaps=st.tuples(separators, separators),
)
def test_planted_key_ids_and_activation_keys_never_survive(
    key: str, before: str, after: str, gaps: tuple[str, str]
) -> None:
    assume(key not in before + after)
    assert key not in redact_text(before + gaps[0] + key + gaps[1] + after)


@given(st.text())
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
