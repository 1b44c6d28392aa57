"""`pricing replay`: the closed loop, played. A world's visitors meet the running pricing service
over HTTP; what they do at the prices it shows is the world's answer, reported back; at each
simulated midnight the service's own decision log (and the day's sales as a transactions feed) is
in the lake, and the nightly loop runs on it; the service then follows whatever was promoted.

The world moves by the simulator's own dynamics, one decision period at a time, so a served policy
meets exactly the market its evaluation ran: `sim.market.Market.arrive` draws the period's
visitors, each is priced by the service, `Market.respond` draws their carts, abandons and
purchases at the prices they were shown (visitors shown different prices of one SKU — two arms on
one shelf — sell from the same stock), and `Market.advance` moves stock, restocks and the
competitor on. Each season's random streams come from `season_seed`, which `pricing parity` gives
the evaluation too: the replay and the evaluation of a season meet the same visitors and the same
flash sales (common random numbers).

Every visitor's profit is the objective's (margin, less an abandoned cart's cost; a price change
costs the visitors of the period that saw it; the clearance bonus goes to the season's buyers),
so the arms' totals over a season are the evaluation's episode profits.
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
from pipeline.ops.experiment import ARMS, arm_figures, effect
from pipeline.orchestration.service_client import ServiceClient
from pipeline.settings import Settings
from sim.feeds import ABANDON, OUTCOMES, PURCHASE, TRANSACTIONS, VIEW
from sim.history import Clock, episode_world
from sim.market import Arrivals, Market, Response, ladder_level, make_streams, split_sold
from sim.world import World

# one row per visitor the replay played (what `pipeline.ops.experiment` analyses, and more)
VISITS = (
    "event_id", "ts", "date", "season", "t", "sku", "arm", "unit", "customer", "level", "price",
    "outcome", "profit", "bought", "margin", "revenue", "explored", "washout",
)  # fmt: skip


def season_seed(seed: int, season: int) -> int:
    """The seed of season ``season``'s market streams (`sim.market.make_streams`): the replay
    and the evaluation of that season draw the same visitors and competitor moves."""
    return int(np.random.SeedSequence([seed, season]).generate_state(1)[0])


@dataclass
class Shelf:
    """The world the visitors meet in one season: a `Market` with one slot per SKU, its random
    streams, the level each arm's visitors last saw, and the last period's counts."""

    season: int
    market: Market
    exo: np.random.Generator
    endo: np.random.Generator
    last: dict[str, np.ndarray]  # arm -> (K,) ladder level its visitors last saw
    counts: np.ndarray  # (K, 3) views, carts, sales of the last period
    bonus: np.ndarray = field(init=False)  # (K,) clearance bonus paid at the season's end

    def __post_init__(self) -> None:
        self.bonus = np.zeros(self.market.n)

    @property
    def ended(self) -> bool:
        return bool(self.market.t[0] >= self.market.p.T)

    @classmethod
    def new(cls, world: World, anchor: dt.datetime, season: int, seed: int) -> Shelf:
        """The shelf at the start of the ``season``-th season after ``anchor``: stock, prices
        and the competitor as the world starts an episode (the service starts a season at the
        ladder's starting price too)."""
        p = episode_world(world, Clock.of(world, anchor).season_start(season)).compile()
        m = Market(p, p.K)
        m.reset(np.arange(p.K), np.arange(p.K))
        exo, endo = make_streams(np.random.default_rng(season_seed(seed, season)))
        levels = {arm: m.level.copy() for arm in ARMS}
        return cls(season, m, exo, endo, levels, np.zeros((p.K, 3), dtype=np.int64))

    def state(self) -> dict[str, Any]:
        m = self.market
        return {
            "season": self.season,
            "t": m.t.tolist(),
            "inventory": m.inventory.tolist(),
            "level": m.level.tolist(),
            "comp": m.comp.tolist(),
            "ema": [m.velocity.tolist(), m.views_ema.tolist(), m.carts_ema.tolist()],
            "streams": [self.exo.bit_generator.state, self.endo.bit_generator.state],
            "last": {arm: v.tolist() for arm, v in self.last.items()},
            "counts": self.counts.tolist(),
        }

    @classmethod
    def of_state(cls, world: World, anchor: dt.datetime, s: dict[str, Any]) -> Shelf:
        shelf = cls.new(world, anchor, int(s["season"]), 0)
        m = shelf.market
        m.t = np.array(s["t"], dtype=np.int64)
        m.inventory = np.array(s["inventory"], dtype=np.int64)
        m.level = np.array(s["level"], dtype=np.int64)
        m.comp = np.array(s["comp"], dtype=np.int64)
        m.velocity, m.views_ema, m.carts_ema = (np.array(v, dtype=float) for v in s["ema"])
        shelf.exo.bit_generator.state, shelf.endo.bit_generator.state = s["streams"]
        shelf.last = {arm: np.array(v, dtype=np.int64) for arm, v in s["last"].items()}
        shelf.counts = np.array(s["counts"], dtype=np.int64)
        return shelf


def save_shelf(lake: Lake, world: World, next_day: dt.date, seed: int, shelf: Shelf) -> None:
    """The world's state at the end of a replay, so that the next one (from ``next_day``) goes
    on from it instead of restocking a season in its middle."""
    payload = {
        "world": world.fingerprint(),
        "next_day": next_day.isoformat(),
        "seed": seed,
        "shelf": shelf.state(),
    }
    lake.write_bytes(REPLAY_SHELF_PATH, json.dumps(payload).encode())


def load_shelf(lake: Lake, world: World, day: dt.date, anchor: dt.datetime) -> Shelf | None:
    """The state an earlier replay left for ``day`` in this world, else None (a fresh shelf)."""
    if not lake.exists(REPLAY_SHELF_PATH):
        return None
    saved = json.loads(lake.read_bytes(REPLAY_SHELF_PATH))
    if saved.get("world") != world.fingerprint() or saved.get("next_day") != day.isoformat():
        return None
    if "shelf" not in saved:  # written by an earlier version of the replay
        return None
    return Shelf.of_state(world, anchor, saved["shelf"])


@dataclass
class Visitors:
    """A period's visitors in the order they arrive, and the service's answers to them."""

    arrivals: Arrivals
    k: np.ndarray  # SKU index of each visitor
    seg: np.ndarray
    customer: list[str]
    ts: list[dt.datetime]
    answers: list[dict[str, Any]] = field(default_factory=list)
    level: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _arrive(
    shelf: Shelf, start: dt.datetime, step_hours: int, rng: np.random.Generator, customers: int
) -> Visitors:
    """The period's visitors (`Market.arrive`), each with a customer id and a moment."""
    arrivals = shelf.market.arrive(shelf.exo)
    K, S = arrivals.views.shape
    cell = np.repeat(np.arange(K * S), arrivals.views.reshape(-1))
    rng.shuffle(cell)
    seconds = np.sort(rng.uniform(0, step_hours * 3600.0, size=len(cell)))
    ids = rng.integers(customers, size=len(cell))
    return Visitors(
        arrivals,
        cell // S,
        cell % S,
        [f"c{int(i)}" for i in ids],
        [start + dt.timedelta(seconds=float(s)) for s in seconds],
    )


def _ask(client: ServiceClient, shelf: Shelf, world: World, v: Visitors) -> None:
    """Each visitor's price from the service, with what the platform knows of the SKU at the
    start of the period (stock, the competitor's price, the last period's counts); visitors of
    one SKU shown one price by one arm form a group (two arms on one shelf make two)."""
    m = shelf.market
    competitor = m.competitor_price
    for k, seg, customer, ts in zip(v.k, v.seg, v.customer, v.ts, strict=True):
        views, carts, sales = (int(x) for x in shelf.counts[k])
        v.answers.append(
            client.call(
                "POST",
                "/v1/price",
                {
                    "sku": world.skus[k].id,
                    "customer_id": customer,
                    "ts": ts.isoformat(),
                    "inventory": int(m.inventory[k]),
                    "competitor_price": float(competitor[k]),
                    "segment": world.segments[seg].name,
                    "views": views,
                    "carts": carts,
                    "sales": sales,
                },
            )
        )
    ratio = np.array([float(a["price"]) for a in v.answers]) / m.p.ref_price[v.k]
    v.level = ladder_level(m.p, ratio) if len(ratio) else np.zeros(0, dtype=np.int64)
    keys: dict[int, dict[tuple[str, int], int]] = {}
    v.group = np.zeros(len(v.k), dtype=np.int64)
    for j, a in enumerate(v.answers):
        mine = keys.setdefault(int(v.k[j]), {})
        v.group[j] = mine.setdefault((a["arm"], int(v.level[j])), len(mine))


def _respond(shelf: Shelf, v: Visitors, rng: np.random.Generator) -> tuple[np.ndarray, Response]:
    """The market's answer to the period's prices (`Market.respond`), and each visitor's outcome:
    the counts of each SKU, segment and group handed to that cell's visitors in a random order."""
    m = shelf.market
    p = m.p
    G = int(v.group.max()) + 1 if len(v.group) else 1
    views = np.zeros((p.K, p.S, G), dtype=np.int64)
    np.add.at(views, (v.k, v.seg, v.group), 1)
    # a group without visitors keeps the price in force (the service decides when asked)
    new = np.repeat(m.level[:, None], G, axis=1)
    old = new.copy()
    for j, a in enumerate(v.answers):
        new[v.k[j], v.group[j]] = v.level[j]
        old[v.k[j], v.group[j]] = shelf.last[a["arm"]][v.k[j]]
    r = m.respond(views, new, old, shelf.endo)
    intents = r.carts - r.abandons  # (K, S, G)
    flat = intents.transpose(0, 2, 1).reshape(p.K * G, p.S)
    bought = split_sold(flat, r.sold.reshape(-1), rng).reshape(p.K, G, p.S).transpose(0, 2, 1)
    # per cell, in OUTCOMES order: viewed only, carted on an empty shelf, bought, abandoned
    counts = np.stack([views - r.carts, intents - bought, bought, r.abandons], axis=3)
    outcome = np.empty(len(v.k), dtype=object)
    cells: dict[tuple[int, int, int], list[int]] = {}
    for j in range(len(v.k)):
        cells.setdefault((int(v.k[j]), int(v.seg[j]), int(v.group[j])), []).append(j)
    for (k, s, g), members in cells.items():
        labels = np.repeat(np.array(OUTCOMES, dtype=object), counts[k, s, g])
        outcome[rng.permutation(members)] = labels
    return outcome, r


def _rows(
    shelf: Shelf, world: World, day: dt.date, v: Visitors, outcome: np.ndarray, r: Response
) -> pd.DataFrame:
    """The visitors' rows (`VISITS`): each one's profit is the objective's share of the step
    (margin, less an abandoned cart's cost, less the price change's cost shared by the group
    that saw it)."""
    p = shelf.market.p
    n = len(v.k)
    price = p.ref_price[v.k] * p.ratios[v.level]
    bought = (outcome == PURCHASE).astype(np.int64)
    margin = bought * (price - p.unit_cost[v.k])
    size = np.zeros(r.level.shape)
    np.add.at(size, (v.k, v.group), 1)
    change = p.change_cost[v.k] * r.changed[v.k, v.group] / np.maximum(size[v.k, v.group], 1)
    profit = p.margin_weight * margin - p.abandon_cost * (outcome == ABANDON) - change
    arms = [a["arm"] for a in v.answers]
    return pd.DataFrame(
        {
            "event_id": [a["event_id"] for a in v.answers],
            "ts": v.ts,
            "date": [day.isoformat()] * n,
            "season": shelf.season,
            "t": int(shelf.market.t[0]),
            "sku": [world.skus[k].id for k in v.k],
            "arm": arms,
            "unit": [a.get("unit") or c for a, c in zip(v.answers, v.customer, strict=True)],
            "customer": v.customer,
            "level": v.level,
            "price": price,
            "outcome": outcome.astype(str) if n else np.zeros(0, dtype=str),
            "profit": profit,
            "bought": bought,
            "margin": margin,
            "revenue": bought * price,
            "explored": [bool(a["explored"]) for a in v.answers],
            "washout": [bool(a.get("washout", False)) for a in v.answers],
        },
        columns=list(VISITS),
    )


def play_period(
    client: ServiceClient,
    shelf: Shelf,
    world: World,
    day: dt.date,
    start: dt.datetime,
    rng: np.random.Generator,
    customers: int,
) -> pd.DataFrame:
    """One decision period: visitors, prices, the market's answer, the outcomes reported, the
    market moved on; returns the visitors' rows (`VISITS`)."""
    m = shelf.market
    v = _arrive(shelf, start, world.horizon.step_hours, rng, customers)
    _ask(client, shelf, world, v)
    outcome, r = _respond(shelf, v, rng)
    for j, a in enumerate(v.answers):
        if outcome[j] != VIEW:
            quantity = 1 if outcome[j] == PURCHASE else 0
            body = {"event_id": a["event_id"], "outcome": outcome[j], "quantity": quantity}
            client.call("POST", "/v1/outcomes", body)
    rows = _rows(shelf, world, day, v, outcome, r)
    for j, a in enumerate(v.answers):
        shelf.last[a["arm"]][v.k[j]] = v.level[j]
    views = r.views.sum(axis=(1, 2))
    # paid at the season's end, to its buyers (`Played.close_season`)
    shelf.bonus, _ = m.advance(v.arrivals, r)
    shelf.counts = np.stack([views, r.carts.sum(axis=(1, 2)), r.sold.sum(axis=1)], axis=1)
    return rows


@dataclass
class Played:
    """Every visitor played so far (`VISITS`), and the clearance bonuses paid to each season's
    buyers of a SKU."""

    frames: list[pd.DataFrame] = field(default_factory=list)
    unpaid_bonus: float = 0.0  # bonuses of SKU-seasons without a visitor to carry them

    def add(self, rows: pd.DataFrame) -> None:
        if len(rows):
            self.frames.append(rows)

    def visits(self) -> pd.DataFrame:
        if not self.frames:
            return pd.DataFrame(columns=list(VISITS))
        if len(self.frames) > 1:
            self.frames = [pd.concat(self.frames, ignore_index=True)]
        return self.frames[0]

    def close_season(self, shelf: Shelf, world: World, bonus: np.ndarray) -> None:
        """The season's clearance bonus of each SKU, shared by its buyers of the season (else by
        its visitors), so that a season's visitors carry the episode's whole profit."""
        if not bonus.any():
            return
        visits = self.visits()
        ids = np.array([s.id for s in world.skus])
        season = visits["season"].to_numpy() == shelf.season
        profit = visits["profit"].to_numpy(dtype=float).copy()
        for k in np.flatnonzero(bonus):
            mine = season & (visits["sku"].to_numpy() == ids[k])
            buyers = mine & (visits["bought"].to_numpy() > 0)
            carriers = buyers if buyers.any() else mine
            if not carriers.any():
                self.unpaid_bonus += float(bonus[k])
                continue
            profit[carriers] += bonus[k] / carriers.sum()
        visits["profit"] = profit


def play_day(
    client: ServiceClient,
    world: World,
    anchor: dt.datetime,
    day: dt.date,
    shelf: Shelf | None,
    seed: int,
    rng: np.random.Generator,
    customers: int,
    played: Played,
) -> tuple[Shelf, pd.DataFrame]:
    """Every decision period of ``day``; a season that starts on it starts with a fresh shelf
    (stock and the competitor as the world starts an episode). Returns the shelf as the day
    leaves it and the day's sales as a transactions feed."""
    clock = Clock.of(world, anchor)  # the service's (serving.market.LiveWorld.clock)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    sales = []
    for h in range(0, 24, clock.step_hours):
        now = start + dt.timedelta(hours=h)
        season, t = clock.season_and_step(clock.period(now))
        if shelf is None or shelf.season != season or int(shelf.market.t[0]) != t:
            shelf = Shelf.new(world, anchor, season, seed)
            # a replay that starts inside a season (nothing saved): the season's opening stock
            # and competitor at this step
            shelf.market.t[:] = t
        rows = play_period(client, shelf, world, day, now, rng, customers)
        played.add(rows)
        if shelf.ended:
            played.close_season(shelf, world, shelf.bonus)
        bought = rows[rows["outcome"] == PURCHASE]
        cost = dict(zip([s.id for s in world.skus], shelf.market.p.unit_cost.tolist(), strict=True))
        sales += [
            (f"rt-{r.event_id}", r.ts, r.sku, 1, r.price, cost[r.sku], r.customer)
            for r in bought.itertuples()
        ]
    frame = pd.DataFrame(sales, columns=list(TRANSACTIONS.names))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    assert shelf is not None
    return shelf, frame


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
    anchor: dt.datetime | None = None,
) -> dict[str, Any]:
    """Play ``days`` days from ``start`` (default: the day after the lake's last decisions);
    returns the figures per day and overall, the experiment's effect, and every visitor's row
    (``"visits"``, a DataFrame). The world's seasons start at ``anchor`` (default: where the
    service says its seasons start)."""
    from pipeline.data.lake import open_lake
    from pipeline.nightly.run import run_night

    lake = open_lake(settings)
    ready = client.call("GET", "/readyz")
    anchor = anchor or dt.datetime.fromisoformat(ready["season_start"])
    design = str(ready.get("experiment", "visitor"))
    if start is None:
        dates = lake.list_dates("raw", "decisions")
        start = dates[-1] + dt.timedelta(days=1) if dates else anchor.date()
    rng = np.random.default_rng([seed, 7])
    shelf = load_shelf(lake, world, start, anchor)
    if shelf is None:
        clock = Clock.of(world, anchor)
        _, t = clock.season_and_step(clock.period(dt.datetime.combine(start, dt.time(0), dt.UTC)))
        where = "a season's start" if t == 0 else f"step {t} of a season, with its opening stock"
        say(f"{start}: a fresh shelf ({where})")
    played, per_day = Played(), []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        shelf, transactions = play_day(
            client, world, anchor, day, shelf, seed, rng, customers, played
        )
        save_shelf(lake, world, day + dt.timedelta(days=1), seed, shelf)
        written = client.call("POST", "/admin/flush")["written"]
        lake.write_partition("raw", "transactions", day, transactions)
        served = client.call("GET", "/readyz")
        visits = played.visits()
        figures = {
            "date": day.isoformat(),
            "champion": served["model_version"],
            "treatment_share": served["treatment_share"],
            **arm_figures(visits[visits["date"] == day.isoformat()]),
        }
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
    visits = played.visits()
    return {
        "design": design,
        "days": per_day,
        "overall": arm_figures(visits),
        "effect": effect(visits, design),
        "conversion_effect": effect(visits, design, "bought"),
        "unpaid_bonus": played.unpaid_bonus,
        "visits": visits,
    }


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
