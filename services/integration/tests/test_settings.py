"""Start-up validation of the keyed tool calls' retention settings: the process refuses to start,
naming the variable and the allowed range."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from edrs_core import SettingsError, load_settings
from edrs_integration.config import IntegrationSettings

DEV = {
    "EDRS_ENVIRONMENT": "development",
    "database_url": "postgresql://db/i",
    "vault_token": "dev-token",
}
RETENTION = "EDRS_INTEGRATION_TOOL_CALL_KEY_RETENTION_HOURS"


def test_the_retention_defaults_to_a_week_and_takes_a_value_in_range() -> None:
    assert load_settings(IntegrationSettings, **DEV).tool_call_key_retention_hours == 168
    chosen = load_settings(IntegrationSettings, **DEV, tool_call_key_retention_hours=1)
    assert chosen.tool_call_key_retention_hours == 1
    assert chosen.tool_call_key_sweep_interval_seconds == 300.0


@pytest.mark.parametrize("hours", [0, -5, 87_601])
def test_a_retention_out_of_range_is_refused_naming_the_variable(hours: int) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(IntegrationSettings, **DEV, tool_call_key_retention_hours=hours)
    assert str(caught.value) == (
        f"integration: invalid configuration: {RETENTION}: must be a whole number of hours from "
        f"1 to 87600 (ten years), got {hours}: keyed tool calls are kept this long after they "
        "finish, so a retried key replays its first outcome"
    )


def test_a_retention_that_is_not_a_whole_number_is_refused() -> None:
    with pytest.raises(SettingsError, match=f"{RETENTION}: Input should be a valid integer"):
        load_settings(IntegrationSettings, **DEV, tool_call_key_retention_hours="a week")


def test_a_sweep_interval_out_of_range_is_refused_naming_the_variable() -> None:
    with pytest.raises(
        SettingsError,
        match="EDRS_INTEGRATION_TOOL_CALL_KEY_SWEEP_INTERVAL_SECONDS: must be more than 0 and at "
        "most 86400 seconds",
    ):
        load_settings(IntegrationSettings, **DEV, tool_call_key_sweep_interval_seconds=0)


def test_the_service_process_does_not_start_with_a_bad_retention() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDRS_", "VAULT_", "BAO_"))}
    env.update(
        EDRS_ENVIRONMENT="development",
        EDRS_INTEGRATION_DATABASE_URL="postgresql://db/i",
        EDRS_INTEGRATION_VAULT_TOKEN="dev-token",
        **{RETENTION: "0"},
    )
    done = subprocess.run(
        [sys.executable, "-m", "edrs_integration"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"{RETENTION}: must be a whole number of hours from 1 to 87600" in done.stderr
