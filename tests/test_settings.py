"""Settings are declared once: the command line derives from them, and a bad value is a
usage error (exit 2, one line naming the option), never a traceback."""

from __future__ import annotations

from dataclasses import fields

import pytest

from main import Settings, parse_args


def test_no_options_give_the_declared_defaults() -> None:
    assert parse_args([]) == Settings()


def test_every_setting_is_an_option() -> None:
    options = {f"--{f.name.replace('_', '-')}": f.name for f in fields(Settings)}
    for option, name in options.items():
        value = {"int": "3", "float": "2.5", "Path": "/tmp/x"}.get(
            type(getattr(Settings(), name)).__name__
        )
        if value is not None:
            assert str(getattr(parse_args([option, value]), name)) == value


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--retry", "attempts=x", "could not convert"),
        ("--retry", "bogus=1", "unknown retry setting 'bogus'"),
        ("--timeouts", "step=-1", "bad saga timeouts"),
        ("--timeouts", "when=3", "unknown timeout setting 'when'"),
        ("--faults", "payment=2", "bad fault rate payment=2.0"),
        ("--faults", "fraud=0.1", "bad fault rate fraud=0.1"),
        ("--faults", "payment", "bad fault rate 'payment'"),
        ("--chaos", "explode=0.1", "bad chaos setting"),
        ("--modules", "order,billing", "unknown ['billing']"),
        ("--ship-countries", "DEU", "not ISO 3166-1 alpha-2"),
        ("--saga", "both", "invalid choice"),
        ("--port", "eighty", "invalid int value"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_option(
    option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([option, value])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"main.py: error: argument {option}") or option in error
    assert says in error
