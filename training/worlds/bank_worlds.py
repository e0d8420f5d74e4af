"""The synthetic bank's two worlds over one site (training/bank.py): `bank`, calibrated, and `weak`, the
previous design. Every calibration choice of `bank` is explained in docs/data.md ("The synthetic bank")."""

from __future__ import annotations

from training import bank
from training.worlds.base import Dynamics, World

# Product affinity of segments (added to click and conversion logits; also skews latent intents).
SEGMENT_AFFINITY: dict[str, dict[str, float]] = {
    "mass": {"credit_card": 0.6, "auto_loan": 0.5, "personal_loan": 0.4, "savings": 0.2},
    "affluent": {"investing": 0.8, "retirement": 0.6, "mortgage": 0.5, "heloc": 0.4, "insurance": 0.3},
    "student": {"checking": 0.8, "credit_card": 0.5},
    "small_business": {"checking": 0.5, "personal_loan": 0.5, "insurance": 0.3},
    "senior": {"retirement": 0.6, "savings": 0.6, "insurance": 0.5},
}
SEGMENT_WEIGHTS = (0.45, 0.2, 0.12, 0.08, 0.15)
PRODUCT_BASE_HOLD = {
    "checking": 0.8, "savings": 0.45, "credit_card": 0.4, "mortgage": 0.2, "heloc": 0.05, "auto_loan": 0.15,
    "personal_loan": 0.08, "investing": 0.15, "retirement": 0.15, "insurance": 0.1,
}

_SITE = dict(site=bank.SITE, intents=bank.INTENTS, tiles=bank.TILES, products=bank.PRODUCTS, devices=bank.DEVICES,
             referrers=bank.REFERRERS, segments=bank.SEGMENTS, segment_weights=SEGMENT_WEIGHTS,
             segment_affinity=SEGMENT_AFFINITY, product_base_hold=PRODUCT_BASE_HOLD)

WEAK = World(
    "weak", "the previous synthetic bank: one need per customer active for 21 days, weak app coupling",
    dynamics=Dynamics(kind="window", click_interest=0.4, click_need=1.8, need_days=21.0,
                      conv_base=-1.2, conv_clicked=1.2),
    customer_share=0.4, app_only_customers=0.3, session_intent_stickiness=0.8, noise_pages=0.3, app_visits=5.0,
    tiles_per_visit=4, **_SITE)

BANK = World(
    "bank", "the calibrated synthetic bank: funnel needs that decay over days, strong app coupling",
    dynamics=Dynamics(kind="funnel", click_interest=0.5, click_need=4.5, half_life_days=7.0,
                      stage_strength=(0.6, 0.85, 1.0), conv_base=-1.6, conv_stage=(-1.0, 0.0, 1.2),
                      conv_clicked=1.0, conv_delay_days=(8.0, 4.0, 1.0)),
    customer_share=0.4, app_only_customers=0.3, session_intent_stickiness=0.8, noise_pages=0.2, app_visits=5.0,
    tiles_per_visit=4, extra_need_rate=0.6, return_visits=1.6, advance=0.45, switch_rate=0.2,
    app_after_session=0.8, **_SITE)
