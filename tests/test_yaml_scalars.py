"""The config loader reads plain scalars as YAML 1.2 does (as JSON and most other tools do),
not as PyYAML's YAML 1.1: no yes/no booleans, no octal from a leading zero, no base 60."""

from __future__ import annotations

import math

import pytest

from gdtrain.config.yaml_file import parse_yaml
from gdtrain.errors import ConfigError


def value(text: str):
    return parse_yaml(f"v: {text}\n", "test.yaml")[0]["v"]


@pytest.mark.parametrize("text, expected", [
    ("10", 10), ("-5", -5), ("+7", 7), ("0", 0),
    ("010", 10),  # YAML 1.1 read this as octal 8
    ("0o10", 8), ("0x1F", 31), ("60_000", 60000),
    ("1e-4", 1e-4), ("6.0E-4", 6e-4), ("1.", 1.0), (".5", 0.5), ("-.5e2", -50.0),
    ("1_000.5", 1000.5), ("010.5", 10.5),
    ("true", True), ("False", False),
])
def test_numbers_and_booleans(text, expected):
    got = value(text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text", [
    "yes", "no", "on", "off", "y", "n",  # YAML 1.1 booleans
    "1:30", "1:30.5",  # YAML 1.1 base 60
    "0b101",  # YAML 1.1 binary
    "6_", "1__0", "1.5_", "_1",  # stray digit-group marks
    "2026-11-22",  # YAML 1.1 timestamp
])
def test_other_plain_scalars_stay_strings(text):
    assert value(text) == text


def test_special_floats():
    assert value(".inf") == math.inf and value("-.inf") == -math.inf
    assert math.isnan(value(".nan"))


def test_explicit_int_tag_with_a_bad_value_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid YAML value"):
        value("!!int abc")
