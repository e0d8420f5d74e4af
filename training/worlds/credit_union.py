"""A second synthetic world, unlike the bank: a member-owned credit union with another site map and URL scheme
(`/personal/borrowing/car-finance`, query-string ids), its own 10 intents, 9 tiles and products, other
segments, devices (mobile first) and proportions (more customers, 6 tiles per app visit, shorter sessions).

It only shares the data contract (training/core/contract.py) and the funnel dynamics with the bank; nothing else in
the code knows about it. Calibration choices are in docs/data.md ("The credit union").
"""

from __future__ import annotations

from training.worlds.base import Dynamics, Intent, World

# area -> page -> funnel stage (0 explore, 1 compare/calculate, 2 apply/act). `{id}` becomes `?id=NNN`.
SITE: dict[str, dict[str, int]] = {
    "home": {"/": 0, "/about-us/our-story": 0, "/about-us/community/{id}": 0, "/find": 0},
    "borrowing": {
        "/personal/borrowing": 0, "/personal/borrowing/car-finance": 0, "/personal/borrowing/car-finance/green": 0,
        "/personal/borrowing/car-finance/calculator": 1, "/personal/borrowing/car-finance/apply": 2,
        "/personal/borrowing/personal-loan": 0, "/personal/borrowing/consolidate": 0,
        "/personal/borrowing/repayment-calculator": 1, "/personal/borrowing/personal-loan/apply": 2,
    },
    "home_loans": {
        "/personal/home-loans": 0, "/personal/home-loans/first-home": 0, "/personal/home-loans/switch": 0,
        "/personal/home-loans/rates": 1, "/personal/home-loans/borrowing-power": 1,
        "/personal/home-loans/book-a-lender": 2, "/personal/home-loans/first-home/saver-grant": 1,
    },
    "saving": {
        "/personal/saving": 0, "/personal/saving/term-deposits": 0, "/personal/saving/term-deposits/rates": 1,
        "/personal/saving/bonus-saver": 0, "/personal/saving/open": 2, "/personal/saving/goal-planner": 1,
    },
    "everyday": {
        "/personal/everyday": 0, "/personal/everyday/accounts": 0, "/personal/everyday/compare": 1,
        "/personal/everyday/join": 2, "/personal/everyday/switch-to-us": 1,
    },
    "cards": {
        "/personal/cards": 0, "/personal/cards/low-rate": 0, "/personal/cards/compare": 1,
        "/personal/cards/balance-transfer": 1, "/personal/cards/apply": 2, "/personal/cards/travel-money": 0,
        "/personal/cards/travel-money/order": 2,
    },
    "business": {
        "/business": 0, "/business/accounts": 0, "/business/lending": 0, "/business/lending/equipment": 1,
        "/business/talk-to-us": 2,
    },
    "retirement": {
        "/personal/retirement-fund": 0, "/personal/retirement-fund/options": 0,
        "/personal/retirement-fund/projector": 1, "/personal/retirement-fund/transfer-in": 2,
    },
    "help": {
        "/help": 0, "/help/article?topic={id}": 0, "/help/card-lost-or-stolen": 2, "/help/scams": 1,
        "/help/contact": 1, "/branches": 0, "/branches/finder?branch={id}": 0,
    },
    "member": {"/member/sign-in": 2, "/member/reset": 2, "/member/register": 2, "/member/home": 0},
}

DEVICES = ("mobile_web", "desktop", "tablet")
SEARCH, DDG = "https://www.google.co.nz/search", "https://duckduckgo.com/"
REFERRERS = ("direct", SEARCH, DDG, "https://www.carsales.example/", "https://www.homes.example/listing",
             "https://www.facebook.com/", "https://news.example/money", "https://mail.cu-members.example/newsletter")
PRODUCTS = ("car_loan", "personal_loan", "home_loan", "term_deposit", "everyday", "credit_card", "business",
            "retirement", "travel_card")
TILES: dict[str, str] = {
    "cu_car_finance": "car_loan", "cu_consolidate": "personal_loan", "cu_home_loan": "home_loan",
    "cu_term_deposit": "term_deposit", "cu_join_everyday": "everyday", "cu_low_rate_card": "credit_card",
    "cu_business": "business", "cu_retirement": "retirement", "cu_travel_money": "travel_card",
}

INTENTS: tuple[Intent, ...] = (
    Intent("car_purchase", "Financing a new or used car, often an EV",
           {"/personal/borrowing/car-finance": 4, "/personal/borrowing/car-finance/green": 2,
            "/personal/borrowing/car-finance/calculator": 4, "/personal/borrowing/car-finance/apply": 2,
            "/personal/borrowing": 1},
           ("car loan rate", "ev loan", "car finance calculator"), depth=1.5, dwell_s=30, devices=(0.7, 0.25, 0.05),
           referrers={"https://www.carsales.example/": 0.5, SEARCH: 0.3, "direct": 0.2}, length=5,
           events={"calculator": 0.3}, tiles=("cu_car_finance",)),
    Intent("debt_relief", "Rolling card and store debt into one loan",
           {"/personal/borrowing/personal-loan": 3, "/personal/borrowing/consolidate": 4,
            "/personal/borrowing/repayment-calculator": 3, "/personal/borrowing/personal-loan/apply": 2,
            "/personal/cards/balance-transfer": 1},
           ("consolidate debt", "personal loan"), depth=1.3, dwell_s=45, devices=(0.65, 0.3, 0.05),
           referrers={SEARCH: 0.5, "https://www.facebook.com/": 0.2, "direct": 0.3}, length=5,
           tiles=("cu_consolidate", "cu_low_rate_card")),
    Intent("first_home", "Saving for and buying a first home",
           {"/personal/home-loans": 3, "/personal/home-loans/first-home": 4,
            "/personal/home-loans/first-home/saver-grant": 3, "/personal/home-loans/borrowing-power": 3,
            "/personal/home-loans/rates": 2, "/personal/home-loans/book-a-lender": 1.5},
           ("first home grant", "how much can i borrow", "deposit"), depth=1.2, dwell_s=75, devices=(0.5, 0.45, 0.05),
           referrers={"https://www.homes.example/listing": 0.5, SEARCH: 0.3, "direct": 0.2}, length=7,
           events={"calculator": 0.2, "download": 0.1}, tiles=("cu_home_loan",)),
    Intent("refix_switch", "A homeowner whose fixed rate ends, comparing a switch",
           {"/personal/home-loans": 2, "/personal/home-loans/switch": 4, "/personal/home-loans/rates": 4,
            "/personal/home-loans/book-a-lender": 2},
           ("refix rates", "switch home loan"), depth=1.4, dwell_s=55, devices=(0.45, 0.5, 0.05),
           referrers={"https://mail.cu-members.example/newsletter": 0.5, "direct": 0.5}, length=4,
           tiles=("cu_home_loan",)),
    Intent("term_deposit", "Parking savings at the best term rate",
           {"/personal/saving": 2, "/personal/saving/term-deposits": 4, "/personal/saving/term-deposits/rates": 4,
            "/personal/saving/open": 1.5, "/personal/saving/bonus-saver": 1},
           ("term deposit rates", "6 month term"), depth=1.0, dwell_s=30, devices=(0.5, 0.45, 0.05),
           referrers={"https://news.example/money": 0.4, DDG: 0.2, "direct": 0.4}, length=4,
           tiles=("cu_term_deposit",)),
    Intent("join_union", "Switching everyday banking to the credit union",
           {"/personal/everyday": 3, "/personal/everyday/accounts": 3, "/personal/everyday/compare": 3,
            "/personal/everyday/switch-to-us": 3, "/personal/everyday/join": 2, "/about-us/our-story": 1.5},
           ("join", "switch bank", "fees"), depth=1.6, dwell_s=35, devices=(0.7, 0.25, 0.05),
           referrers={"https://www.facebook.com/": 0.4, SEARCH: 0.4, "direct": 0.2}, length=5,
           events={"form_start": 0.1}, tiles=("cu_join_everyday",)),
    Intent("business_finance", "A sole trader or farm after equipment lending",
           {"/business": 3, "/business/accounts": 2, "/business/lending": 3, "/business/lending/equipment": 3,
            "/business/talk-to-us": 2},
           ("equipment finance", "business account"), depth=1.3, dwell_s=60, devices=(0.3, 0.65, 0.05),
           referrers={SEARCH: 0.5, "direct": 0.5}, length=6, tiles=("cu_business",)),
    Intent("retirement_planning", "Checking the retirement fund and transferring in",
           {"/personal/retirement-fund": 4, "/personal/retirement-fund/options": 3,
            "/personal/retirement-fund/projector": 4, "/personal/retirement-fund/transfer-in": 1.5},
           ("retirement projector", "fund options"), depth=1.0, dwell_s=80, devices=(0.35, 0.55, 0.1),
           referrers={"direct": 0.6, SEARCH: 0.4}, length=6, events={"calculator": 0.25}, tiles=("cu_retirement",)),
    Intent("travel", "Ordering travel money before a trip",
           {"/personal/cards/travel-money": 4, "/personal/cards/travel-money/order": 2, "/personal/cards": 1,
            "/help/article?topic={id}": 1},
           ("travel card", "exchange rate"), depth=1.5, dwell_s=25, devices=(0.75, 0.2, 0.05),
           referrers={SEARCH: 0.5, "direct": 0.5}, length=4, tiles=("cu_travel_money", "cu_low_rate_card")),
    Intent("member_help", "Lost card, a scam text, or locked out",
           {"/help": 3, "/help/card-lost-or-stolen": 3, "/help/scams": 3, "/help/contact": 3, "/member/reset": 2,
            "/help/article?topic={id}": 2, "/branches/finder?branch={id}": 1},
           ("lost card", "scam", "reset password"), search_rate=0.2, depth=2.0, dwell_s=15,
           devices=(0.8, 0.15, 0.05), referrers={"direct": 0.9, SEARCH: 0.1}, length=4, events={"form_start": 0.2}),
)

SEGMENTS = ("young_member", "family", "retiree", "rural", "business_owner")
SEGMENT_WEIGHTS = (0.3, 0.3, 0.2, 0.12, 0.08)
SEGMENT_AFFINITY: dict[str, dict[str, float]] = {
    "young_member": {"car_loan": 0.6, "everyday": 0.5, "travel_card": 0.5, "credit_card": 0.3},
    "family": {"home_loan": 0.6, "personal_loan": 0.4, "car_loan": 0.3},
    "retiree": {"term_deposit": 0.8, "retirement": 0.5, "travel_card": 0.3},
    "rural": {"business": 0.5, "car_loan": 0.4, "term_deposit": 0.3},
    "business_owner": {"business": 0.9, "credit_card": 0.3},
}
PRODUCT_BASE_HOLD = {"car_loan": 0.1, "personal_loan": 0.08, "home_loan": 0.25, "term_deposit": 0.2,
                     "everyday": 0.85, "credit_card": 0.3, "business": 0.05, "retirement": 0.3, "travel_card": 0.1}

WORLD = World(
    "credit_union", "a member-owned credit union: another site, intents, tiles and proportions",
    site=SITE, intents=INTENTS, tiles=TILES, products=PRODUCTS, devices=DEVICES, referrers=REFERRERS,
    segments=SEGMENTS, segment_weights=SEGMENT_WEIGHTS, segment_affinity=SEGMENT_AFFINITY,
    product_base_hold=PRODUCT_BASE_HOLD,
    dynamics=Dynamics(kind="funnel", click_base=-3.0, click_affinity=0.7, click_position=-0.2, click_held=-1.3,
                      click_interest=0.4, click_need=4.5, propensity_sd=0.6, half_life_days=5.0,
                      stage_strength=(0.5, 0.8, 1.0), conv_base=-1.8, conv_stage=(-0.8, 0.2, 1.4),
                      conv_clicked=1.2, conv_delay_days=(10.0, 5.0, 2.0)),
    login_url="/member/sign-in", after_login_url="/member/home", search_url="/find?term={q}", id_style="query",
    browse_intent="member_help",
    customer_share=0.55, app_only_customers=0.15, session_intent_stickiness=0.85, noise_pages=0.15,
    app_visits=7.0, tiles_per_visit=6, devices_per_customer=(0.6, 0.3, 0.1),
    extra_need_rate=0.4, return_visits=1.2, advance=0.5, switch_rate=0.12, app_after_session=0.8,
    stage_gap_days=(4.0, 2.0, 0.7), stage_dwell=(1.0, 1.8, 0.5), stage_length=(1.1, 1.0, 0.6),
    stage_think_s=(8.0, 5.0, 2.0), other_conversion=0.05,
)
