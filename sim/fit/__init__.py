"""Refit the market from logs, check the refit on held-out days, and fit demand from sales alone.

- `fit_world` (`sim.fit.market`) estimates a world's demand side from the *decisions* feed;
- `fidelity_check` (`sim.fit.fidelity`) is the fidelity gate: a refit world must reproduce
  held-out days, both the conversion rate by price bucket and the daily units per SKU;
- `fit_demand_transactions` (`sim.fit.demand`) fits a per-SKU Poisson demand curve to a plain
  point-of-sale export, and `fit_transactions_world` (`sim.fit.transactions`) builds a simulator
  from it, with `transactions_fidelity_check` as its gate.

Every estimate is a maximum-likelihood fit with `scipy.optimize` (`sim.fit.mle`); standard errors
come from the inverse of the observed information (the negative Hessian of the log-likelihood at
the optimum). The hourly panel the refit and the gate share is `sim.fit.panel`.
"""

from sim.fit.demand import DemandFit, fit_demand_transactions
from sim.fit.fidelity import FidelityReport, fidelity_check
from sim.fit.market import WorldFit, fit_world
from sim.fit.mle import FitError
from sim.fit.transactions import (
    TransactionsFidelity,
    fit_transactions_world,
    transactions_fidelity_check,
)

__all__ = [
    "DemandFit",
    "FidelityReport",
    "FitError",
    "TransactionsFidelity",
    "WorldFit",
    "fidelity_check",
    "fit_demand_transactions",
    "fit_transactions_world",
    "fit_world",
    "transactions_fidelity_check",
]
