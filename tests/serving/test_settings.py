"""ServeSettings defines each server setting once; `oaml serve` derives its options from it."""

from __future__ import annotations

from dataclasses import fields

from oaml.serving.settings import MIB, ServeSettings
from tests.conftest import oaml_in_process


def test_options_round_trip_in_their_units():
    defaults = {flag: default for flag, default, _ in ServeSettings.options()}
    assert defaults["max_body_mb"] == 32.0 and defaults["min_body_rate_kb"] == 64.0
    assert ServeSettings.from_options(defaults) == ServeSettings()
    settings = ServeSettings.from_options({"max_body_mb": 1.5, "max_images": 3}, name="x")
    assert settings.max_body_bytes == int(1.5 * MIB) and isinstance(settings.max_body_bytes, int)
    assert (settings.max_images, settings.name) == (3, "x")


def test_every_option_is_on_the_command_line_with_its_help():
    shown = oaml_in_process("serve", "--help").stdout
    flagged = [f for f in fields(ServeSettings) if "flag" in f.metadata]
    assert len(flagged) >= 18
    for field in flagged:
        assert "--" + field.metadata["flag"].replace("_", "-") in shown, field.name
