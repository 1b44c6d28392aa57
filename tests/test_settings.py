"""Settings refuse bad values at construction, naming the variable and the fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PRICING_HOLDOUT_DAYS": "28"},
            "PRICING_HOLDOUT_DAYS (28) must be below PRICING_TRAIN_DAYS",
        ),
        ({"PRICING_ALGOS": '["ppo", "a2c"]'}, "PRICING_ALGOS: unknown algorithm 'a2c'"),
        ({"PRICING_LOCK_URI": "mysql://db/locks"}, "PRICING_LOCK_URI must be a PostgreSQL URL"),
        ({"PRICING_LOCK_URI": "postgres://db/locks"}, "PRICING_LOCK_URI must be a PostgreSQL URL"),
        ({"PRICING_DRIFT_PSI_THRESHOLD": "0"}, "drift_psi_threshold"),
        ({"PRICING_POS_HOLIDAYS": "Narnia"}, "PRICING_POS_HOLIDAYS: 'Narnia' is not a country"),
    ],
)
def test_bad_values_name_the_variable(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings()


def test_a_postgresql_lock_uri_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICING_LOCK_URI", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    assert Settings().lock_uri.startswith("postgresql+psycopg2://")


def test_pos_holidays_name_the_days_of_a_window() -> None:
    import datetime as dt

    from pipeline.nightly.steps import public_holidays

    days = [dt.date(2026, 12, 20) + dt.timedelta(days=i) for i in range(14)]
    assert public_holidays(Settings(pos_holidays="US"), days) == [
        dt.date(2026, 12, 25),
        dt.date(2027, 1, 1),
    ]
    assert public_holidays(Settings(), days) == []
