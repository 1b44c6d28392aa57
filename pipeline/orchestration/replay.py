"""`pricing replay`: the closed loop, played. A world's visitors meet the running pricing service
over HTTP; each visitor's outcome is drawn from the world at the price the service showed and
reported back; at each simulated midnight the service's own decision log (and the day's sales as a
transactions feed) is in the lake, and the nightly loop runs on it; the service then follows
whatever was promoted.

The world moves as the simulator's market does (`sim.market.Market.step`), one visitor at a time:
visitors per hour and segment are Poisson; a visitor carts with the world's purchase probability
at the price shown, abandons with the world's probability for that price move, and buys if stock
is left (else the cart is a stock-out). Both arms sell from the same shelf. Seasons start at the
service's season anchor (the lake's first catalogue snapshot), as `pricing history` starts them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts import REPLAY_SHELF_PATH
from pipeline.data.lake import Lake
from pipeline.orchestration.service_client import ServiceClient
from pipeline.settings import Settings
from sim.feeds import ABANDON, CART, PURCHASE, TRANSACTIONS, VIEW
from sim.history import Clock, episode_world
from sim.market import demand_shock, ladder_level
from sim.params import MarketParams
from sim.stats import mean_ci95
from sim.world import World

ARMS = ("control", "treatment")


@dataclass
class Tally:
    """Per arm: each visitor's profit (margin of what they bought), purchases, revenue."""

    profit: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ARMS})
    bought: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ARMS})
    revenue: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ARMS, 0.0))
    explored: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ARMS, 0))
    versions: set[str] = field(default_factory=set)

    def add(self, arm: str, profit: float, bought: bool, revenue: float, explored: bool) -> None:
        self.profit[arm].append(profit)
        self.bought[arm].append(float(bought))
        self.revenue[arm] += revenue
        self.explored[arm] += int(explored)

    def merge(self, other: Tally) -> None:
        for arm in ARMS:
            self.profit[arm] += other.profit[arm]
            self.bought[arm] += other.bought[arm]
            self.revenue[arm] += other.revenue[arm]
            self.explored[arm] += other.explored[arm]
        self.versions |= other.versions

    def figures(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            profit = np.array(self.profit[arm])
            n = len(profit)
            if n == 0:
                out[arm] = {"visitors": 0}
                continue
            ppv, lo, hi = mean_ci95(profit)
            conv, clo, chi = mean_ci95(np.array(self.bought[arm]))
            revenue = self.revenue[arm]
            out[arm] = {
                "visitors": n,
                "profit_per_visitor": ppv,
                "profit_per_visitor_ci95": [lo, hi],
                "conversion": conv,
                "conversion_ci95": [clo, chi],
                "margin": float(profit.sum() / revenue) if revenue > 0 else None,
                "exploration_rate": self.explored[arm] / n,
            }
        return out


@dataclass
class Shelf:
    """The world's state the visitors meet: stock, the competitor's state, the season's step."""

    params: MarketParams
    inventory: np.ndarray
    comp: np.ndarray
    last_level: dict[tuple[int, str], int] = field(default_factory=dict)
    counts: np.ndarray = field(init=False)  # views, carts, sales per SKU in the last period

    def __post_init__(self) -> None:
        self.counts = np.zeros((len(self.inventory), 3), dtype=np.int64)


def save_shelf(lake: Lake, world: World, next_day: dt.date, state: dict[str, Any]) -> None:
    """The world's state at the end of a replay, so that the next one (from ``next_day``) goes
    on from it instead of restocking a season in its middle."""
    shelf: Shelf = state["shelf"]
    payload = {
        "world": world.fingerprint(),
        "next_day": next_day.isoformat(),
        "season": state["season"],
        "inventory": shelf.inventory.tolist(),
        "comp": shelf.comp.tolist(),
        "counts": shelf.counts.tolist(),
        "last_level": [[k, arm, level] for (k, arm), level in shelf.last_level.items()],
    }
    lake.write_bytes(REPLAY_SHELF_PATH, json.dumps(payload).encode())


def load_shelf(lake: Lake, world: World, day: dt.date, anchor: dt.datetime) -> dict[str, Any]:
    """The state an earlier replay left for ``day`` in this world, else empty (a fresh shelf)."""
    if not lake.exists(REPLAY_SHELF_PATH):
        return {}
    saved = json.loads(lake.read_bytes(REPLAY_SHELF_PATH))
    if saved.get("world") != world.fingerprint() or saved.get("next_day") != day.isoformat():
        return {}
    season = int(saved["season"])
    shelf = new_shelf(world, anchor, season)
    shelf.inventory = np.array(saved["inventory"], dtype=np.int64)
    shelf.comp = np.array(saved["comp"], dtype=np.int64)
    shelf.counts = np.array(saved["counts"], dtype=np.int64)
    shelf.last_level = {(int(k), str(arm)): int(level) for k, arm, level in saved["last_level"]}
    return {"season": season, "shelf": shelf}


def new_shelf(world: World, anchor: dt.datetime, season: int) -> Shelf:
    """The shelf at the start of the ``season``-th season after ``anchor``."""
    p = episode_world(world, Clock.of(world, anchor).season_start(season)).compile()
    k = len(world.skus)
    return Shelf(p, p.initial_inventory.copy(), np.full(k, p.comp_initial, dtype=np.int64))


@dataclass
class Day:
    tally: Tally
    transactions: pd.DataFrame


@dataclass(frozen=True)
class Visit:
    arm: str
    price: float
    outcome: str
    bought: bool
    explored: bool
    event_id: str


def _visit(
    client: ServiceClient,
    shelf: Shelf,
    world: World,
    k: int,
    seg: int,
    ts: dt.datetime,
    customer: str,
    rng: np.random.Generator,
) -> Visit:
    """One visitor: the service's price, the world's answer, the outcome reported."""
    p = shelf.params
    views, carts, sales = (int(x) for x in shelf.counts[k])
    answer = client.call(
        "POST",
        "/v1/price",
        {
            "sku": world.skus[k].id,
            "customer_id": customer,
            "ts": ts.isoformat(),
            "inventory": int(shelf.inventory[k]),
            "competitor_price": float(p.ref_price[k] * p.comp_ratio[k, shelf.comp[k]]),
            "segment": world.segments[seg].name,
            "views": views,
            "carts": carts,
            "sales": sales,
        },
    )
    arm, price = answer["arm"], float(answer["price"])
    level = int(ladder_level(p, np.array([price / p.ref_price[k]]))[0])
    old = shelf.last_level.get((k, arm), level)
    shelf.last_level[(k, arm)] = level
    outcome = VIEW
    if rng.random() < p.buy_prob[k, seg, level, shelf.comp[k]]:
        if shelf.inventory[k] > 0 and rng.random() < p.abandon[old, level]:
            outcome = ABANDON
        elif shelf.inventory[k] > 0:
            outcome = PURCHASE
            shelf.inventory[k] -= 1
        else:
            outcome = CART  # carted, but the shelf was empty
    if outcome != VIEW:
        body = {"event_id": answer["event_id"], "outcome": outcome, "quantity": 1}
        client.call(
            "POST", "/v1/outcomes", body if outcome == PURCHASE else {**body, "quantity": 0}
        )
    return Visit(
        arm, price, outcome, outcome == PURCHASE, bool(answer["explored"]), answer["event_id"]
    )


def play_day(
    client: ServiceClient,
    world: World,
    anchor: dt.datetime,
    day: dt.date,
    state: dict[str, Any],
    rng: np.random.Generator,
    customers: int,
) -> Day:
    """Every hour of ``day``: visitors, prices, outcomes; the shelf moves on as the market does."""
    clock = Clock.of(world, anchor)  # the service's (serving.market.LiveWorld.clock)
    step_hours = clock.step_hours
    tally, sales = Tally(), []
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    for h in range(0, 24, step_hours):
        now = start + dt.timedelta(hours=h)
        season, t = clock.season_and_step(clock.period(now))
        if state.get("season") != season:  # a new season: stock and prices start afresh
            state["season"], state["shelf"] = season, new_shelf(world, anchor, season)
        shelf: Shelf = state["shelf"]
        p = shelf.params
        lam = p.arrivals[:, t][:, None] * p.seg_mix[t][None, :]
        if p.dispersion.any():
            lam = lam * demand_shock(p.dispersion, rng)[:, None]
        visitors = rng.poisson(lam)  # (K, S)
        order = [
            (k, s)
            for k in range(len(world.skus))
            for s in range(p.S)
            for _ in range(visitors[k, s])
        ]
        rng.shuffle(order)
        seconds = np.sort(rng.uniform(0, step_hours * 3600.0, size=len(order)))
        counts = np.zeros_like(shelf.counts)
        for (k, s), sec in zip(order, seconds, strict=True):
            customer = f"c{int(rng.integers(customers))}"
            ts = now + dt.timedelta(seconds=float(sec))
            v = _visit(client, shelf, world, k, s, ts, customer, rng)
            cost = float(p.unit_cost[k])
            tally.add(
                v.arm, v.price - cost if v.bought else 0.0, v.bought, v.price * v.bought, v.explored
            )
            counts[k] += (1, v.outcome != VIEW, v.bought)
            if v.bought:
                sales.append((f"rt-{v.event_id}", ts, world.skus[k].id, 1, v.price, cost, customer))
        shelf.counts = counts
        # the hour ends: restocks arrive, the competitor moves (as in Market.step)
        if t + 1 < p.T:
            shelf.inventory = np.minimum(p.capacity, shelf.inventory + p.restock[:, t + 1])
        u = rng.random(len(shelf.comp))
        shelf.comp = np.minimum((u[:, None] > p.comp_cdf[shelf.comp]).sum(axis=1), p.C - 1)
    frame = pd.DataFrame(sales, columns=list(TRANSACTIONS.names))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return Day(tally, frame)


def replay(
    settings: Settings,
    world: World,
    client: ServiceClient,
    start: dt.date | None,
    days: int,
    seed: int,
    customers: int = 20_000,
    nightly: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Play ``days`` days from ``start`` (default: the day after the lake's last decisions);
    returns the figures per day and overall."""
    from pipeline.data.lake import open_lake
    from pipeline.nightly.run import run_night

    lake = open_lake(settings)
    ready = client.call("GET", "/readyz")
    anchor = dt.datetime.fromisoformat(ready["season_start"])
    if start is None:
        dates = lake.list_dates("raw", "decisions")
        start = dates[-1] + dt.timedelta(days=1) if dates else anchor.date()
    rng = np.random.default_rng(seed)
    state = load_shelf(lake, world, start, anchor)
    if not state:
        say(f"{start}: a fresh shelf (stock as at a season's start)")
    overall, per_day = Tally(), []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        played = play_day(client, world, anchor, day, state, rng, customers)
        save_shelf(lake, world, day + dt.timedelta(days=1), state)
        written = client.call("POST", "/admin/flush")["written"]
        lake.write_partition("raw", "transactions", day, played.transactions)
        served = client.call("GET", "/readyz")
        figures = {
            "date": day.isoformat(),
            "champion": served["model_version"],
            "treatment_share": served["treatment_share"],
            **played.tally.figures(),
        }
        overall.merge(played.tally)
        night = None
        if nightly:
            result = run_night(settings, day, say=lambda m: None)
            night = {
                "status": result.status,
                "stopped_at": result.stopped_at,
                "reason": result.reason,
            }
            reloaded = client.call("POST", "/admin/reload")
            night["serving"] = reloaded["policy"]
        figures["night"] = night
        per_day.append(figures)
        say(day_line(figures, written))
    return {"days": per_day, "overall": overall.figures()}


def day_line(f: dict[str, Any], written: int) -> str:
    champion = f"v{f['champion']}" if f["champion"] else "none (fallback)"
    parts = [
        f"{f['date']}: {written} decisions logged, champion {champion}, "
        f"treatment share {f['treatment_share']:.0%}"
    ]
    for arm in ARMS:
        a = f[arm]
        if a.get("visitors"):
            lo, hi = a["profit_per_visitor_ci95"]
            parts.append(
                f"{arm} {a['visitors']} visitors, profit/visitor {a['profit_per_visitor']:.3f} "
                f"[{lo:.3f}, {hi:.3f}], conversion {a['conversion']:.1%}, "
                f"explored {a['exploration_rate']:.1%}"
            )
    night = f.get("night")
    if night:
        parts.append(
            f"night {night['status']}"
            + (f" at {night['stopped_at']}" if night["stopped_at"] else "")
        )
    return "; ".join(parts)
