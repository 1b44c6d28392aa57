"""The live market a request describes, turned into exactly the observation the agent trained on.

A selling season is the world's horizon (``steps`` decision periods of ``step_hours``); seasons
repeat from an anchor (``PRICING_SERVE_SEASON_START``; by default midnight of the lake's first
catalogue snapshot, where `pricing history` starts its seasons too). A request's time gives the
decision period and the step of the season; the catalogue gives the SKU's facts; the request gives
stock and the competitor's price; the service's state gives the price level in force and the
averages of sales, views and carts. `sim.market.observe` then computes the observation — the
simulator's own function.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from sim.history import Clock, episode_world
from sim.market import Market, observe
from sim.params import MarketParams
from sim.world import World


@dataclass
class LiveWorld:
    """The world the service prices in (the champion's, or the night's base world), with its
    catalogue's SKUs indexed and one compiled set of arrays per season start."""

    world: World
    anchor: dt.datetime
    source: str
    categories: dict[str, str] = field(default_factory=dict)  # the catalogue's, by SKU
    index: dict[str, int] = field(init=False)
    clock: Clock = field(init=False)
    ref_price: list[float] = field(init=False)  # per catalogue index, as the log writes them
    unit_cost: list[float] = field(init=False)
    competitor_ref: list[float] = field(init=False)
    _params: dict[int, MarketParams] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        skus = self.world.skus
        self.index = {s.id: i for i, s in enumerate(skus)}
        self.ref_price = [float(s.ref_price) for s in skus]
        self.unit_cost = [float(s.unit_cost) for s in skus]
        self.competitor_ref = [float(s.competitor_ref or s.ref_price) for s in skus]
        self.clock = Clock.of(self.world, self.anchor)

    def params(self, season: int) -> MarketParams:
        """The compiled world for the season that starts ``season`` horizons after the anchor."""
        if season not in self._params:
            start = self.clock.season_start(season)
            if len(self._params) > 4:
                self._params.clear()
            self._params[season] = episode_world(self.world, start).compile()
        return self._params[season]

    def market(
        self,
        p: MarketParams,
        sku: np.ndarray,
        t: int,
        inventory: np.ndarray,
        level: np.ndarray,
        competitor_ratio: np.ndarray,
        ema: np.ndarray,
    ) -> tuple[Market, np.ndarray]:
        """A `Market` in the live state (for policies that read it, like the rule-based pricer:
        the competitor's price as the request gives it, and its nearest modelled state) and the
        observation."""
        n = len(sku)
        m = Market(p, n)
        m.sku = sku
        m.t = np.full(n, t, dtype=np.int64)
        m.inventory = np.minimum(inventory, p.capacity[sku])
        m.level = level
        m.comp = np.abs(p.comp_ratio[sku] - competitor_ratio[:, None]).argmin(axis=1)
        m.comp_ratio_given = np.asarray(competitor_ratio, dtype=float)
        m.velocity, m.views_ema, m.carts_ema = ema[:, 0], ema[:, 1], ema[:, 2]
        obs = observe(
            p,
            sku,
            m.t,
            inventory,
            p.ratios[level],
            competitor_ratio,
            ema[:, 0],
            ema[:, 1],
            ema[:, 2],
        )
        return m, obs
