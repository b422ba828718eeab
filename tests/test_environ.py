"""SGW_REACH_* variables as options: names, values, precedence, errors."""

from __future__ import annotations

import argparse
import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import cli, diagnosis, inputs
from agent.environ import apply_environment, boolean, variable_name
from agent.errors import UsageError


def parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    """A check's options on a parser that raises UsageError, as the CLI's."""
    made = cli._Parser(prog="sgw-reach check")
    cli.add_check_arguments(made)
    apply_environment(made, environ)
    return made


def parse(environ: dict[str, str], *argv: str) -> argparse.Namespace:
    return parser(environ).parse_args(list(argv))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """add_check_arguments reads os.environ: none of the runner's own."""
    for name in list(os.environ):
        if name.startswith("SGW_REACH_"):
            monkeypatch.delenv(name)


REQUIRED = {"SGW_REACH_TYPE": "file", "SGW_REACH_REGION": "us-east-1"}


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        ("--type", "SGW_REACH_TYPE"),
        ("--region", "SGW_REACH_REGION"),
        ("--dns-server", "SGW_REACH_DNS_SERVER"),
        ("--max-skew", "SGW_REACH_MAX_SKEW"),
        ("--diagnose", "SGW_REACH_DIAGNOSE"),
        ("--diagnose-timeout", "SGW_REACH_DIAGNOSE_TIMEOUT"),
        ("--appliance", "SGW_REACH_APPLIANCE"),
        ("--help", None),
    ],
)
def test_variable_names(option: str, variable: str | None) -> None:
    actions = {
        string: action
        for action in parser({})._actions
        for string in action.option_strings
    }
    assert variable_name(actions[option]) == variable


def test_required_options_come_from_variables() -> None:
    args = parse(REQUIRED)
    assert (args.gateway_type, args.region) == ("file", "us-east-1")


def test_without_variables_the_options_stay_required() -> None:
    with pytest.raises(UsageError, match="required"):
        parse({})


def test_an_empty_variable_is_unset() -> None:
    with pytest.raises(UsageError, match="required"):
        parse({"SGW_REACH_TYPE": " ", "SGW_REACH_REGION": ""})


def test_values_go_through_the_options_types() -> None:
    args = parse(
        {
            **REQUIRED,
            "SGW_REACH_GATEWAY": "[10.0.0.5]",
            "SGW_REACH_TIMEOUT": "2.5",
            "SGW_REACH_CONCURRENCY": "8",
            "SGW_REACH_PROXY": "proxy.example.com",
            "SGW_REACH_FORMAT": "json",
        }
    )
    assert args.gateway == "10.0.0.5"
    assert args.timeout == 2.5
    assert args.concurrency == 8
    assert args.proxy == ("proxy.example.com", 8080)
    assert args.format == "json"


def test_a_flag_wins_over_its_variable() -> None:
    environ = {**REQUIRED, "SGW_REACH_TIMEOUT": "2.5", "SGW_REACH_FORMAT": "json"}
    args = parse(environ, "--type", "volume", "--timeout", "1", "--format", "table")
    assert (args.gateway_type, args.timeout, args.format) == ("volume", 1.0, "table")


def test_repeatable_options_take_a_comma_separated_list() -> None:
    environ = {**REQUIRED, "SGW_REACH_DNS_SERVER": " 10.0.0.2, 10.0.0.3 ,"}
    assert parse(environ).dns_server == ["10.0.0.2", "10.0.0.3"]
    skips = parse({**REQUIRED, "SGW_REACH_SKIP": "file.ad.*,22"}).skip
    assert skips == ["file.ad.*", "22"]


def test_flags_replace_the_variables_list() -> None:
    environ = {**REQUIRED, "SGW_REACH_DNS_SERVER": "10.0.0.2,10.0.0.3"}
    args = parse(environ, "--dns-server", "10.0.0.9", "--dns-server", "10.0.0.8")
    assert args.dns_server == ["10.0.0.9", "10.0.0.8"]
    # The variable's list itself is left as it was, for the next parse.
    again = parser(environ)
    assert again.parse_args([]).dns_server == ["10.0.0.2", "10.0.0.3"]
    assert again.parse_args(["--dns-server", "10.0.0.7"]).dns_server == ["10.0.0.7"]
    assert again.parse_args([]).dns_server == ["10.0.0.2", "10.0.0.3"]


def test_applying_twice_changes_nothing_more() -> None:
    environ = {**REQUIRED, "SGW_REACH_ONLY": "file.ntp"}
    made = parser(environ)
    apply_environment(made, environ)
    assert made.parse_args([]).only == ["file.ntp"]
    assert made.parse_args(["--only", "53"]).only == ["53"]


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=8))
def test_any_list_of_addresses_round_trips(
    addresses: list[ipaddress.IPv4Address],
) -> None:
    texts = [str(address) for address in addresses]
    args = parse({**REQUIRED, "SGW_REACH_DNS_SERVER": ",".join(texts)})
    assert args.dns_server == texts


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("no", False),
        (" off ", False),
    ],
)
def test_switches_take_yes_and_no_words(word: str, value: bool) -> None:
    assert boolean(word) is value
    environ = {**REQUIRED, "SGW_REACH_APPLIANCE": word, "SGW_REACH_DIAGNOSE": word}
    args = parse(environ)
    assert args.appliance is value
    assert args.diagnose is value


def test_a_switch_flag_wins_over_its_variable() -> None:
    args = parse({**REQUIRED, "SGW_REACH_DIAGNOSE": "yes"}, "--no-diagnose")
    assert args.diagnose is False
    args = parse({**REQUIRED, "SGW_REACH_DIAGNOSE": "no"}, "--diagnose")
    assert args.diagnose is True


def test_a_store_false_switch_counts_as_given_when_true() -> None:
    made = cli._Parser(prog="sgw-reach")
    made.add_argument("--no-color", dest="color", action="store_false")
    apply_environment(made, {"SGW_REACH_NO_COLOR": "yes"})
    assert made.parse_args([]).color is False
    apply_environment(made, {"SGW_REACH_NO_COLOR": "no"})
    assert made.parse_args([]).color is True


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("SGW_REACH_TIMEOUT", "soon", "SGW_REACH_TIMEOUT: 'soon' is not a number"),
        ("SGW_REACH_TYPE", "tap", "SGW_REACH_TYPE: invalid choice: 'tap'"),
        ("SGW_REACH_DNS_SERVER", "10.0.0.1,dns", "SGW_REACH_DNS_SERVER: 'dns'"),
        ("SGW_REACH_DIAGNOSE", "maybe", "SGW_REACH_DIAGNOSE: 'maybe' is not a yes"),
        ("SGW_REACH_APPLIANCE", "2", "SGW_REACH_APPLIANCE: '2'"),
        ("SGW_REACH_OUTPUT", "/nonexistent/r.json", "SGW_REACH_OUTPUT: /non"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_variable(
    variable: str, value: str, words: str
) -> None:
    with pytest.raises(UsageError) as caught:
        parser({**REQUIRED, variable: value})
    message = str(caught.value)
    assert message.startswith(words)
    assert "\n" not in message


def test_a_type_error_names_the_type() -> None:
    made = argparse.ArgumentParser()
    made.add_argument("--count", type=int)
    with pytest.raises(UsageError, match="SGW_REACH_COUNT: invalid int value: 'x'"):
        apply_environment(made, {"SGW_REACH_COUNT": "x"})


def test_a_type_given_by_name_is_looked_up() -> None:
    made = argparse.ArgumentParser()
    made.register("type", "seconds", inputs.seconds)
    made.add_argument("--wait", type="seconds")
    apply_environment(made, {"SGW_REACH_WAIT": "3"})
    assert made.parse_args([]).wait == 3.0


def test_options_without_a_variable_are_left_alone() -> None:
    made = argparse.ArgumentParser()
    made.add_argument("-v", action="count", default=0)
    made.add_argument("--pair", nargs=2)
    made.add_argument("--mode", action="store_const", const="fast")
    apply_environment(
        made, {"SGW_REACH_V": "3", "SGW_REACH_PAIR": "a,b", "SGW_REACH_MODE": "1"}
    )
    args = made.parse_args([])
    assert (args.v, args.pair, args.mode) == (0, None, None)


def test_the_command_line_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SGW_REACH_TYPE", "file")
    monkeypatch.setenv("SGW_REACH_REGION", "mars-north-1")
    assert cli.main(["check"]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    # Both required options were taken; the region then failed its check.
    assert error.startswith("sgw-reach: error: --region:")
    assert error.count("\n") == 1


def test_a_bad_variable_ends_the_command_line_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SGW_REACH_TIMEOUT", "0")
    assert cli.main(["check", "--type", "file", "--region", "x"]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith("sgw-reach: error: SGW_REACH_TIMEOUT: '0' is not")
    assert error.count("\n") == 1


@pytest.mark.parametrize(("word", "value"), [("1", True), ("yes", True), ("", False)])
def test_the_diagnose_variable_agrees_with_its_old_reader(
    monkeypatch: pytest.MonkeyPatch, word: str, value: bool
) -> None:
    monkeypatch.setenv(diagnosis.ENV_SETTING, word)
    assert diagnosis.enabled_by_default() is value
    args = cli.build_parser().parse_args(["check", *_required_flags()])
    assert args.diagnose is value


def _required_flags() -> list[str]:
    return ["--type", "file", "--region", "us-east-1"]


def test_the_options_only_a_watch_has_take_variables_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        **REQUIRED,
        "SGW_REACH_EVERY": "30s",
        "SGW_REACH_LISTEN": "127.0.0.1:9877",
        "SGW_REACH_KEEP_DAYS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    args = cli.build_parser().parse_args(["watch"])
    assert (args.every, args.listen, args.keep_days) == (
        30.0,
        ("127.0.0.1", 9877),
        2.0,
    )
    assert args.gateway_type == "file"
    assert cli.build_parser().parse_args(["watch", "--every", "1m"]).every == 60.0


def test_a_bad_watch_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGW_REACH_EVERY", "soon")
    with pytest.raises(UsageError, match="SGW_REACH_EVERY"):
        cli.build_parser()
