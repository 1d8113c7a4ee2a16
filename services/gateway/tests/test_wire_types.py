"""The API's wire types for dates and date-times: RFC 3339 / ISO 8601 text only. pydantic alone
would read a number (or a string of one) as Unix seconds, so `dueBefore=0.5` listed tasks due
before 1970 instead of being refused (found by schemathesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from edrs_gateway.api.models import IsoDate, Rfc3339
from pydantic import TypeAdapter, ValidationError

MOMENT = TypeAdapter(Rfc3339)
DAY = TypeAdapter(IsoDate)


def test_a_date_time_is_rfc3339_text_with_a_zone() -> None:
    assert MOMENT.validate_python("2026-12-31T17:00:00Z") == datetime(2026, 12, 31, 17, tzinfo=UTC)
    for bad in (0, 0.5, "0", "0.5", "1767200400", True, "2026-12-31", "2026-12-31T17:00:00"):
        with pytest.raises(ValidationError):
            MOMENT.validate_python(bad)


def test_a_day_is_yyyy_mm_dd() -> None:
    assert DAY.validate_python("2026-02-28") == date(2026, 2, 28)
    for bad in (0, "0", "20260228", "2026-02-30", "2026-2-28", 1767200400):
        with pytest.raises(ValidationError):
            DAY.validate_python(bad)
