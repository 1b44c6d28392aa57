"""The market: world model, gymnasium env, vectorised market, exact optimum and baselines."""

from gymnasium.envs.registration import register, registry

if "Pricing-v0" not in registry:
    register(id="Pricing-v0", entry_point="sim.env:PricingEnv")
