"""Who is in which arm: the experiment's design (``PRICING_SERVE_EXPERIMENT``).

- ``visitor``: a salted hash of ``customer_id`` puts each customer at a fixed point in [0, 1);
  below the treatment share is treatment. Raising the share only moves customers into treatment.
  Both arms sell from one shelf, so where stock binds the comparison is biased (a policy that
  keeps stock for later leaves it to the other arm): valid only where stock does not bind.
- ``sku``: each SKU is in one arm for the whole experiment, every visitor of it sees that arm's
  price. The catalogue is sorted by category (the catalogue's, else the id's first word) and,
  within one, by the SKUs' salted hashes; the i-th SKU's point is the van der Corput number of
  i, rotated by a salted offset, so that points of SKUs next to each other in that order are
  spread over [0, 1). Below the share is treatment: each SKU is treated with probability the
  share, a run of 2^m SKUs holds the share of treatment SKUs to within one (the catalogue as a
  whole, and each category to within about log2 of its size: stratified by category), and
  raising the share only moves SKUs into treatment. Adding SKUs to the catalogue re-sorts it,
  which may move SKUs between arms: the log keeps each decision's.
- ``switchback``: every SKU alternates between arms by blocks of decision periods (a selling
  season by default: a block's stock then starts afresh, nothing one arm did carries over).
  Blocks are randomised in antithetic pairs: a pair's salted hash ``u`` puts its first block in
  treatment when ``u`` is below the share and its second when ``u + 1/2`` (mod 1) is, so each
  block is treated with probability the share, at 50 % every pair has one block of each arm
  (balanced, and compared close in time), and raising the share only moves blocks into
  treatment. The first ``washout_hours`` of a block whose arm differs from the one before are
  logged as washout and left out of the analysis.

Each decision's design, unit (``customer``, ``sku:<id>``, ``block:<n>``) and washout flag are
logged with it (the decisions feed), so the rollout judges each design on its own unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serving.schemas import Arm
from sim.served import unit_point


def van_der_corput(i: np.ndarray) -> np.ndarray:
    """The base-2 van der Corput number of each non-negative integer: its bits mirrored about
    the binary point (0, 1/2, 1/4, 3/4, 1/8, ...)."""
    i = np.asarray(i, dtype=np.int64).copy()
    out = np.zeros(i.shape)
    scale = 0.5
    while (i > 0).any():
        out += scale * (i & 1)
        i >>= 1
        scale /= 2
    return out


def category_of(sku: str, categories: dict[str, str]) -> str:
    """The SKU's category: the catalogue's, else its id up to the first ``-``."""
    return categories.get(sku) or sku.split("-", 1)[0]


@dataclass(frozen=True)
class Assignment:
    arm: Arm
    unit: str
    washout: bool = False


@dataclass
class Arms:
    """The design's assignment of (customer, SKU, period) to an arm."""

    design: str
    salt: str
    block_periods: int  # switchback: decision periods per block
    washout_periods: int
    _points: dict[str, float] = field(default_factory=dict)
    _catalogue: tuple[str, ...] = ()

    def sku_points(self, skus: tuple[str, ...], categories: dict[str, str]) -> dict[str, float]:
        """Each catalogue SKU's point in [0, 1) of the ``sku`` design (see the module)."""
        if skus != self._catalogue:
            order = sorted(
                skus, key=lambda s: (category_of(s, categories), unit_point(self.salt, s))
            )
            rotation = unit_point(self.salt, "sku-design")
            points = (van_der_corput(np.arange(len(order))) + rotation) % 1.0
            self._points = dict(zip(order, points.tolist(), strict=True))
            self._catalogue = skus
        return self._points

    def block_arm(self, block: int, share: float) -> Arm:
        pair, second = divmod(block, 2)
        point = (unit_point(self.salt, f"blocks:{pair}") + 0.5 * second) % 1.0
        return "treatment" if point < share else "control"

    def assign(
        self,
        share: float,
        customer_id: str,
        skus: list[str],
        period: int,
        catalogue: tuple[str, ...],
        categories: dict[str, str],
    ) -> list[Assignment]:
        """Each SKU's arm for this customer at this decision period."""
        if self.design == "sku":
            points = self.sku_points(catalogue, categories)
            return [
                Assignment("treatment" if points[s] < share else "control", f"sku:{s}")
                for s in skus
            ]
        if self.design == "switchback":
            block, into = divmod(period, self.block_periods)
            arm = self.block_arm(block, share)
            washout = into < self.washout_periods and arm != self.block_arm(block - 1, share)
            return [Assignment(arm, f"block:{block}", washout)] * len(skus)
        point = unit_point(self.salt, customer_id)
        return [Assignment("treatment" if point < share else "control", customer_id)] * len(skus)
