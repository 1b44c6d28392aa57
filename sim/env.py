"""`PricingEnv`: one SKU, one selling season, as a gymnasium environment."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.market import Market, make_streams
from sim.world import World, default_world


class PricingEnv(gym.Env[np.ndarray, np.int64]):
    """
    ## Description

    A retailer sets the price of one SKU every step (hourly by default) over a selling season (a week
    by default). Visitors of several customer segments arrive with hour-of-day and day-of-week
    seasonality; each carts with a logit probability in the log price relative to the SKU's reference
    price and to the competitor's price; carts are abandoned more often right after a price rise; the
    rest buy while stock lasts. A competitor's price follows a Markov chain with undercuts and flash
    sales. Stock is finite, restocked on a schedule, and a clearance target pays a bonus at the end.
    All parameters come from the world file (`pricing world --default` prints the default one).

    ## Action Space

    `Discrete(A)`: a move of the price on the ladder, in percent of the reference price. Default
    `A = 5`: | 0: −10 % | 1: −5 % | 2: keep | 3: +5 % | 4: +10 % |, clipped to
    `[price_min, price_max]` x reference price.

    ## Observation Space

    `Box(16 + S,)` float32, normalised per SKU so that one policy serves a whole catalogue:

    | index | observation                                         | min | max |
    |-------|-----------------------------------------------------|-----|-----|
    | 0     | inventory / capacity                                | 0   | 1   |
    | 1     | price / reference − 1                               | −1  | 4   |
    | 2     | competitor price / reference − 1                    | −1  | 4   |
    | 3     | sales velocity (EMA of units per step) / visitors   | 0   | 5   |
    | 4     | recent views (EMA) / mean visitors per step         | 0   | 10  |
    | 5     | recent carts (EMA) / mean visitors per step         | 0   | 5   |
    | 6, 7  | sin, cos of the hour of day                         | −1  | 1   |
    | 8, 9  | sin, cos of the time of week                        | −1  | 1   |
    | 10    | fraction of the season left                         | 0   | 1   |
    | 11    | unit cost / reference price                         | 0   | 5   |
    | 12    | log(1 + expected visitors left / capacity)          | 0   | 8   |
    | 13    | units still to be restocked / capacity              | 0   | 20  |
    | 14    | units above the clearance target / capacity         | 0   | 1   |
    | 15    | clearance bonus / (reference price x capacity)      | 0   | 10  |
    | 16..  | segment mix of the coming step (S shares)           | 0   | 1   |

    ## Rewards

    Per step, in currency: `margin_weight x units sold x (price − unit cost)` − `abandonment_penalty`
    per abandoned cart − `price_change_penalty x reference price` when the price moved, and at the end
    `clearance_bonus x reference price` if the inventory left is at most `(1 − clearance_target) x
    capacity`. The sum over an episode is the "profit" that every report and the DP optimum use.

    ## Starting State

    A SKU drawn uniformly from the catalogue (or `options={"sku": i}`), its initial inventory, the price
    at `initial_price x reference`, the competitor in its initial state, step 0 of the horizon.

    ## Episode End

    `terminated` at the end of the horizon (the season is over; nothing is left to bootstrap).
    `truncated` is never set by the env itself.

    ## Arguments

    `world`: a `World` (default: the bundled default world). `gymnasium.make("Pricing-v0", world=...)`.
    The info dict carries the true Markov state and the step's outcome in natural units.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium declares it an instance attribute)

    def __init__(self, world: World | None = None) -> None:
        self.world = world if world is not None else default_world()
        self.params = self.world.compile()
        self.market = Market(self.params, 1)
        self.action_space = spaces.Discrete(self.params.A)
        low, high = self.market.obs_low, self.market.obs_high
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self._exo: np.random.Generator | None = None
        self._endo: np.random.Generator | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._exo is None:
            self._exo, self._endo = make_streams(self.np_random)
        if options and "sku" in options:
            sku = int(options["sku"])
            if not 0 <= sku < self.params.K:
                raise ValueError(f"options['sku'] must be in 0..{self.params.K - 1} (got {sku})")
        else:
            sku = int(self.np_random.integers(self.params.K))
        self.market.reset(np.array([0]), np.array([sku]))
        return self._get_obs(), self._get_info()

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._exo is None or self._endo is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(
                f"action must be an integer in [0, {self.params.A - 1}] (got {action})"
            )
        out = self.market.step(np.array([int(action)]), self._exo, self._endo)
        info = self._get_info()
        info.update(
            sold=int(out.sold[0]),
            views=int(out.views[0].sum()),
            carts=int(out.carts[0].sum()),
            abandons=int(out.abandons[0].sum()),
            revenue=float(out.revenue[0]),
            margin=float(out.margin[0]),
            price_changed=bool(out.changed[0]),
            clearance_bonus=float(out.bonus[0]),
        )
        return self._get_obs(), float(out.reward[0]), bool(out.done[0]), False, info

    def _get_obs(self) -> np.ndarray:
        obs: np.ndarray = self.market.observe()[0]
        return obs

    def _get_info(self) -> dict[str, Any]:
        m = self.market
        return {
            "sku": self.world.skus[int(m.sku[0])].id,
            "sku_index": int(m.sku[0]),
            "t": int(m.t[0]),
            "inventory": int(m.inventory[0]),
            "price_level": int(m.level[0]),
            "price": float(m.price[0]),
            "competitor_state": int(m.comp[0]),
            "competitor_price": float(m.competitor_price[0]),
        }
