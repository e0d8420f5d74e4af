"""The synthetic worlds the generator can write (`intent data --world NAME`).

- `bank` (default): the calibrated synthetic bank, with funnel stages, return visits, in-visit intent switches
  and needs that decay over days (docs/data.md, "The synthetic bank").
- `weak`: the previous configuration of the same bank (one need per customer, a fixed 21-day window, a weak
  intent -> click coupling), kept for the robustness section.
- `credit_union`: another site (URL scheme, intents, tiles, proportions) built from its own module.

Only the generator (`training.synthetic`) and the evaluation oracle may use these modules.
"""

from __future__ import annotations

from training.worlds.base import DAY_MS, Dynamics, Intent, NeedState, World, click_logit, need_strength

WORLD_NAMES = ("bank", "weak", "credit_union")
DEFAULT_WORLD = "bank"
LEGACY_WORLD = "weak"
"""The world of data directories written before worlds existed (no `world` in generator_config.json)."""


def get_world(name: str) -> World:
    if name in ("bank", "weak"):
        from training.worlds import bank_worlds

        return bank_worlds.BANK if name == "bank" else bank_worlds.WEAK
    if name == "credit_union":
        from training.worlds import credit_union

        return credit_union.WORLD
    raise ValueError(f"unknown world {name!r} (one of {', '.join(WORLD_NAMES)})")


__all__ = ["DAY_MS", "DEFAULT_WORLD", "LEGACY_WORLD", "WORLD_NAMES", "Dynamics", "Intent", "NeedState", "World",
           "click_logit", "get_world", "need_strength"]
