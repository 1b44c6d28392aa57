"""The service's contract through FastAPI's test client: answers, holds, arms, validation, admin,
outcomes, the decision log, the champion and its fallback."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.validation import validate_partition
from serving.decide import Batch
from serving.schemas import SkuState
from sim.feeds import DECISIONS
from sim.served import unit_point
from tests.serving.conftest import ANCHOR, TOKEN, Env

TS = "2026-01-05T10:15:00Z"
BODY = {"sku": "scarce", "customer_id": "c1", "inventory": 20, "ts": TS}


def _logged(env: Env) -> pd.DataFrame:
    frames = [
        env.lake.read_partition("raw", "decisions", d)
        for d in env.lake.list_dates("raw", "decisions")
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DECISIONS.names)


def test_without_a_champion_the_rule_based_pricer_answers_and_says_why(env: Env) -> None:
    from prometheus_client import REGISTRY

    # the metrics are the process's: other tests in this process may have counted answers
    before = REGISTRY.get_sample_value("pricing_fallback_answers_total") or 0.0
    with env.client(treatment_share=1.0) as client:
        r = client.post("/v1/price", json=BODY)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["policy"] == "fallback" and r.headers["X-Pricing-Policy"] == "fallback"
        assert answer["arm"] == "treatment" and answer["model_version"] is None
        ready = client.get("/readyz").json()
        assert ready["policy"] == "fallback" and "no @champion" in ready["reason"]
        assert "pricing_fallback_answers_total" in client.get("/metrics").text
        assert REGISTRY.get_sample_value("pricing_fallback_answers_total") == before + 1


def test_the_champion_answers_treatment_and_the_rule_control(env: Env) -> None:
    version = env.champion()
    with env.client(treatment_share=0.5) as client:
        seen = {}
        for i in range(40):
            a = client.post("/v1/price", json={**BODY, "customer_id": f"c{i}"}).json()
            seen[a["arm"]] = a
        assert seen["treatment"]["policy"] == "champion"
        assert seen["treatment"]["model_version"] == version
        assert seen["control"]["policy"] == "rule"
        assert client.get("/readyz").json()["model_version"] == version


def test_a_price_holds_for_its_period_and_arm(env: Env) -> None:
    with env.client(treatment_share=0.0) as client:
        first = client.post("/v1/price", json={**BODY, "customer_id": "a"}).json()
        later = client.post(
            "/v1/price", json={**BODY, "customer_id": "b", "ts": "2026-01-05T10:59:59Z"}
        ).json()
        assert later["price"] == first["price"] and later["event_id"] != first["event_id"]
        assert first["valid_until"].startswith("2026-01-05T11:00:00")
        nxt = client.post(
            "/v1/price", json={**BODY, "customer_id": "b", "ts": "2026-01-05T11:00:00Z"}
        ).json()
        assert nxt["valid_until"].startswith("2026-01-05T12:00:00")


def test_raising_the_share_moves_only_customers_into_treatment(env: Env) -> None:
    customers = [f"cust-{i}" for i in range(2000)]
    with env.client(treatment_share=0.05) as client:
        before = {c for c in customers if unit_point("pricing-ab-1", c) < 0.05}
        r = client.post(
            "/admin/ab",
            json={"treatment_share": 0.25},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200
        arms = {
            c: client.post("/v1/price", json={**BODY, "customer_id": c}).json()["arm"]
            for c in customers[:300]
        }
    after = {c for c, arm in arms.items() if arm == "treatment"}
    assert before & set(arms) <= after  # nobody left treatment
    assert 0.15 < len(after) / len(arms) < 0.35


def test_propensities_are_of_the_price_served(env: Env) -> None:
    env.champion()
    with env.client(treatment_share=0.5, epsilon=0.3, control_epsilon=0.2) as client:
        for i in range(60):
            ts = f"2026-01-05T{i % 24:02d}:10:00Z"
            a = client.post("/v1/price", json={**BODY, "customer_id": f"c{i}", "ts": ts}).json()
            assert 0.0 < a["propensity"] <= 1.0
        pricer = client.app.state.svc.pricer  # type: ignore[attr-defined]
        items = Batch.of_rows(
            [SkuState(sku="scarce", inventory=3), SkuState(sku="overstock", inventory=40)]
        )
        for arm in ("treatment", "control"):
            p, _, _, market, obs, _ = pricer.observation(arm, 5, items)
            probs = pricer._probs(arm, p, market, obs, ["scarce", "overstock"])[0]
            assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
            assert (probs > 0).all()  # exploration gives every price move support


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "inventory": -1}, "inventory"),
        ({**BODY, "competitor_price": 1e9}, "competitor_price"),
        ({**BODY, "current_price": 0}, "current_price"),
        ({**BODY, "inventory": "many"}, "inventory"),
        ({k: v for k, v in BODY.items() if k != "customer_id"}, "customer_id"),
        ({**BODY, "ts": "2026-01-05T10:00:00"}, "ts"),  # no time zone
        ({**BODY, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(env: Env, body: dict[str, object], field: str) -> None:
    with env.client() as client:
        r = client.post("/v1/price", json=body)
    assert r.status_code == 422
    assert field in {str(part) for e in r.json()["detail"] for part in e["loc"]}


def test_a_batch_as_columns_gets_the_prices_it_gets_as_items(env: Env) -> None:
    env.champion()
    skus = ["scarce", "overstock", "scarce"]
    rows = [
        {"sku": "scarce", "inventory": 5, "competitor_price": 9.5, "views": 3},
        {"sku": "overstock", "inventory": 30, "current_price": 12.0},
        {"sku": "scarce", "inventory": 5},
    ]
    columns = {
        "sku": skus,
        "inventory": [5, 30, 5],
        "competitor_price": [9.5, None, None],
        "current_price": [None, 12.0, None],
        "views": [3, None, None],
    }
    with env.client(treatment_share=0.5) as client:
        for customer in ("c1", "c2", "c3", "c4"):
            head = {"customer_id": customer, "ts": TS}
            as_items = client.post("/v1/prices", json={**head, "items": rows})
            as_columns = client.post("/v1/prices", json={**head, "columns": columns})
            assert as_items.status_code == as_columns.status_code == 200, as_columns.text
            a, c = as_items.json(), as_columns.json()
            assert "prices" not in c and "columns" not in a
            assert c["columns"]["sku"] == skus and len(set(c["columns"]["event_id"])) == 3
            for name in ("price", "action", "propensity", "explored", "clipped"):
                assert c["columns"][name] == [p[name] for p in a["prices"]], name
            assert (c["arm"], c["policy"], c["valid_until"]) == (
                a["arm"],
                a["policy"],
                a["valid_until"],
            )
    logged = _logged(env)
    assert len(logged) == 24
    by_id = logged.set_index("event_id")
    ids = c["columns"]["event_id"]
    assert list(by_id.loc[ids, "competitor_price"])[1:] == [
        env.world.skus[i].competitor_ref or env.world.skus[i].ref_price for i in (1, 0)
    ]
    assert by_id.loc[ids[0], "competitor_price"] == 9.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"columns": {"sku": ["scarce", "overstock"], "inventory": [1]}},
            "columns.inventory has 1",
        ),
        (
            {"columns": {"sku": ["scarce"], "inventory": [1], "views": [1, 2]}},
            "columns.views has 2",
        ),
        ({"columns": {"sku": ["scarce"], "inventory": [-1]}}, "greater than or equal to 0"),
        ({}, "either as items"),
        (
            {
                "items": [{"sku": "scarce", "inventory": 1}],
                "columns": {"sku": ["a"], "inventory": [1]},
            },
            "either as items",
        ),
    ],
)
def test_a_bad_batch_is_a_422_that_says_what_to_fix(
    env: Env, body: dict[str, object], message: str
) -> None:
    with env.client() as client:
        r = client.post("/v1/prices", json={"customer_id": "c1", **body})
    assert r.status_code == 422 and message in r.text, r.text


def test_nan_is_refused(env: Env) -> None:
    raw = json.dumps({**BODY, "competitor_price": math.nan})  # NaN is not JSON, but is sent
    with env.client() as client:
        r = client.post("/v1/price", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "competitor_price" in r.text


def test_an_unknown_sku_is_a_404(env: Env) -> None:
    with env.client() as client:
        r = client.post("/v1/price", json={**BODY, "sku": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_admin_actions_need_the_token(env: Env) -> None:
    with env.client() as client:
        for path, body in (("/admin/ab", {"treatment_share": 0.5}), ("/admin/reload", None)):
            assert client.post(path, json=body).status_code == 401
            assert (
                client.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code
                == 401
            )
        r = client.post(
            "/admin/exploration",
            json={"epsilon": 0.2, "explore_skus": ["scarce"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200 and r.json()["explore_skus"] == ["scarce"]


def test_decisions_and_outcomes_reach_the_lake_in_the_feed_contract(env: Env) -> None:
    with env.client(treatment_share=0.5) as client:
        ids = []
        for i in range(30):
            ts = f"2026-01-05T{i % 24:02d}:30:00Z"
            ids.append(
                client.post("/v1/price", json={**BODY, "customer_id": f"c{i}", "ts": ts}).json()[
                    "event_id"
                ]
            )
        batch = client.post(
            "/v1/prices",
            json={
                "customer_id": "c99",
                "ts": TS,
                "items": [{"sku": "scarce", "inventory": 5}, {"sku": "overstock", "inventory": 30}],
            },
        ).json()
        ids += [p["event_id"] for p in batch["prices"]]
        ok = client.post(
            "/v1/outcomes", json={"event_id": ids[0], "outcome": "purchase", "quantity": 2}
        )
        assert ok.status_code == 200
        assert (
            client.post("/v1/outcomes", json={"event_id": ids[0], "outcome": "view"}).status_code
            == 409
        )
        assert (
            client.post("/v1/outcomes", json={"event_id": "nope", "outcome": "view"}).status_code
            == 404
        )
        assert (
            client.post("/v1/outcomes", json={"event_id": ids[1], "outcome": "abandon"}).status_code
            == 200
        )
    logged = _logged(env)  # the shutdown wrote every waiting decision
    assert sorted(logged["event_id"]) == sorted(ids)
    assert list(logged.columns) == list(DECISIONS.names)
    row = logged.set_index("event_id")
    assert (row.loc[ids[0], "outcome"], row.loc[ids[0], "quantity"]) == ("purchase", 2)
    assert row.loc[ids[1], "outcome"] == "abandon" and row.loc[ids[2], "outcome"] == "view"
    day = env.lake.read_partition("raw", "decisions", ANCHOR)
    result = validate_partition("decisions", day, ANCHOR, dt.datetime(2026, 1, 6), data_docs=False)
    assert result.success, result.failures


def test_a_corrupted_champion_leaves_the_fallback_in_place(env: Env) -> None:
    from prometheus_client import REGISTRY

    failed = {"result": "failed"}
    before = REGISTRY.get_sample_value("pricing_model_reloads_total", failed) or 0.0
    version = env.champion()
    for agent in Path(env.settings.artifacts_dir).rglob("agent.zip"):
        agent.write_bytes(agent.read_bytes()[:-10] + b"corrupted!")
    with env.client(treatment_share=1.0) as client:
        answer = client.post("/v1/price", json=BODY)
        assert answer.json()["policy"] == "fallback"
        ready = client.get("/readyz").json()
        assert ready["failed_loads"] == 1 and f"v{version} failed" in ready["reason"]
        assert 'pricing_model_reloads_total{result="failed"}' in client.get("/metrics").text
        assert REGISTRY.get_sample_value("pricing_model_reloads_total", failed) == before + 1


def test_an_alias_move_is_picked_up_without_a_restart(env: Env) -> None:
    first = env.champion(seed=0)
    with env.client(treatment_share=1.0, poll_seconds=0.2) as client:
        assert client.post("/v1/price", json=BODY).json()["model_version"] == first
        second = env.champion(seed=1)
        import time

        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["model_version"] != second:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.2)
        later = {**BODY, "ts": "2026-01-05T11:15:00Z"}
        assert client.post("/v1/price", json=later).json()["model_version"] == second


def test_when_another_worker_decided_first_its_price_holds(env: Env) -> None:
    """Two workers may decide one SKU's period at once: the hold stored first is everyone's."""
    with env.client(treatment_share=0.0) as client:
        svc = client.app.state.svc  # type: ignore[attr-defined]
        store, period = svc.store, svc.pricer.live.clock.period(dt.datetime.fromisoformat(TS))
        real_holds = store.holds
        calls = []

        def first_misses(arm: str, at: int, skus: list[str]) -> dict[str, tuple[object, ...]]:
            calls.append(skus)
            if len(calls) == 1:  # this worker looked before the other one stored its hold
                store.decide(
                    arm, at, [("scarce", 0, 0, 0.5, "rule", None, 0, 0)], [("scarce", at, 0, 0, 0)]
                )
                return {}
            return real_holds(arm, at, skus)

        store.holds = first_misses
        answer = client.post("/v1/price", json=BODY).json()
        ratios = svc.pricer.live.params(period // svc.pricer.live.clock.steps).ratios
        assert answer["price"] == round(env.world.skus[0].ref_price * ratios[0], 4)
        assert answer["propensity"] == 0.5 and len(calls) == 2


def test_every_worker_reports_the_share_an_admin_call_to_another_set(env: Env) -> None:
    with env.client(treatment_share=0.05) as one, env.client(treatment_share=0.05) as other:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (
            one.post("/admin/ab", json={"treatment_share": 0.25}, headers=auth).status_code == 200
        )
        assert other.get("/readyz").json()["treatment_share"] == 0.25


def test_a_planner_champion_prices_as_its_table(env: Env) -> None:
    """The model-based candidate is served through the same champion path: its price is the
    exact plan's action for the state the request describes."""
    import mlflow
    import numpy as np

    from pipeline.model.planner import plan
    from pipeline.release.registry import CHAMPION
    from pipeline.tracking import experiment

    planner = plan(env.world)
    reg = env.registry()
    with experiment(env.settings, "test"), mlflow.start_run():
        mv = reg.register_candidate(planner, env.world, "planner", {"logical_date": "2026-01-05"})
    reg.client.set_registered_model_alias(reg.name, CHAMPION, str(mv.version))
    p = planner.params
    knobs = {"treatment_share": 1.0, "epsilon": 0.0, "epsilon_min": 0.0, "max_step_levels": 5}
    served, want, level = [], [], p.initial_level
    with env.client(**knobs) as c:
        # one price per SKU and period holds: one request per hour, the stock changing
        for hour, inventory in zip(range(10, 16), [0, 3, 9, 17, 25, 12], strict=True):
            body = {**BODY, "inventory": inventory, "ts": f"2026-01-05T{hour:02d}:15:00Z"}
            answer = c.post("/v1/price", json=body).json()
            assert answer["policy"] == "champion", answer
            assert answer["model_version"] == str(mv.version)
            served.append(answer["action"])
            action = int(planner.table[0, hour, inventory, level, p.comp_initial])
            want.append(action)
            level = int(np.clip(level + p.moves[action], 0, p.L - 1))
            assert answer["price"] == pytest.approx(p.ref_price[0] * p.ratios[level], abs=0.01)
    assert served == want
    assert len(set(want)) > 1  # the plan depends on the state: the lookup is not trivial


def test_the_sku_design_puts_each_sku_in_one_arm_and_logs_its_unit(env: Env) -> None:
    """PRICING_SERVE_EXPERIMENT=sku: every visitor of a SKU sees its arm's price, a batch spans
    both arms (each item, and the columns, say which), and the log records the design, the
    unit and the arm of each price."""
    env.champion()
    skus = [s.id for s in env.world.skus]
    with env.client(treatment_share=0.5, experiment="sku") as client:
        assert client.get("/readyz").json()["experiment"] == "sku"
        arms = {}
        for i in range(20):  # many customers, one arm per SKU
            for sku in skus:
                a = client.post("/v1/price", json={**BODY, "sku": sku, "customer_id": f"c{i}"})
                arms.setdefault(sku, set()).add(a.json()["arm"])
                assert a.json()["unit"] == f"sku:{sku}" and a.json()["washout"] is False
        assert all(len(v) == 1 for v in arms.values())
        by_sku = {s: next(iter(v)) for s, v in arms.items()}
        assert set(by_sku.values()) == {"treatment", "control"}
        items = [{"sku": s, "inventory": 10} for s in skus]
        body = {"customer_id": "c-batch", "ts": TS}
        batch = client.post("/v1/prices", json={**body, "items": items}).json()
        assert {p["sku"]: p["arm"] for p in batch["prices"]} == by_sku
        cols = {"sku": skus, "inventory": [10] * len(skus)}
        columns = client.post("/v1/prices", json={**body, "columns": cols}).json()["columns"]
        assert dict(zip(columns["sku"], columns["arm"], strict=True)) == by_sku
    logged = _logged(env)
    assert set(logged["experiment"]) == {"sku"}
    assert (logged["unit"] == "sku:" + logged["sku"]).all()
    assert (logged["ab_arm"] == logged["sku"].map(by_sku)).all()
    assert (logged["washout"] == 0).all()
