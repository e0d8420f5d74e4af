"""The synthetic bank's world: site map, latent intents, tiles and products.

The data of the `bank` and `weak` worlds (training/worlds/bank_worlds.py). Only the generator and the evaluation
oracle read the intents here; training never sees them.
Each intent is a behavioural profile: which pages it visits (by funnel stage), how it
searches, how long it dwells, where it arrives from and on which device.
"""

from __future__ import annotations

from training.worlds.base import Intent

# Site map: product area -> pages. Paths with `{id}` get a random numeric id (the featurizer
# must normalize them away). Stage: 0 = explore, 1 = compare/calculate, 2 = apply/act.
SITE: dict[str, dict[str, int]] = {
    "home": {"/": 0, "/about": 0, "/careers": 0, "/careers/jobs/{id}": 0, "/newsroom/{id}": 0, "/search": 0},
    "checking": {
        "/checking": 0, "/checking/total-checking": 0, "/checking/student": 0, "/checking/compare": 1,
        "/checking/fees": 1, "/checking/open": 2,
    },
    "savings": {
        "/savings": 0, "/savings/high-yield": 0, "/savings/cd": 0, "/savings/money-market": 0,
        "/rates/savings": 1, "/savings/open": 2,
    },
    "credit_cards": {
        "/credit-cards": 0, "/credit-cards/cash-back": 0, "/credit-cards/travel-rewards": 0,
        "/credit-cards/balance-transfer": 0, "/credit-cards/compare": 1, "/credit-cards/prequalify": 1,
        "/credit-cards/apply": 2,
    },
    "mortgage": {
        "/mortgage": 0, "/mortgage/purchase": 0, "/mortgage/first-time-buyer": 0, "/mortgage/refinance": 0,
        "/mortgage/rates": 1, "/mortgage/calculator": 1, "/home-equity/heloc": 0, "/mortgage/apply": 2,
    },
    "loans": {
        "/auto-loans": 0, "/auto-loans/rates": 1, "/auto-loans/calculator": 1, "/auto-loans/apply": 2,
        "/personal-loans": 0, "/personal-loans/debt-consolidation": 0, "/personal-loans/calculator": 1,
        "/personal-loans/apply": 2,
    },
    "investing": {
        "/investing": 0, "/investing/self-directed": 0, "/investing/robo-advisor": 0, "/investing/advisor": 1,
        "/retirement/ira": 0, "/retirement/rollover-401k": 1, "/retirement/calculator": 1, "/investing/open": 2,
    },
    "insurance": {
        "/insurance": 0, "/insurance/home": 0, "/insurance/auto": 0, "/insurance/life": 0, "/insurance/quote": 2,
    },
    "support": {
        "/support": 0, "/support/contact": 1, "/support/faq": 0, "/support/article/{id}": 0,
        "/security/report-fraud": 2, "/security/lost-card": 2, "/support/dispute-transaction": 2,
        "/security/identity-theft": 1, "/branch-locator/{id}": 0,
    },
    "rates_calculators": {
        "/rates": 0, "/calculators": 0, "/calculators/budget": 1, "/calculators/savings-goal": 1,
        "/calculators/debt-payoff": 1,
    },
    "login": {"/login": 2, "/login/forgot-password": 2, "/enroll": 2, "/online-banking": 0},
}

ALL_PAGES: list[str] = [p for pages in SITE.values() for p in pages]
PAGE_STAGE: dict[str, int] = {p: s for pages in SITE.values() for p, s in pages.items()}

DEVICES = ("desktop", "mobile_web", "tablet")
REFERRERS = (
    "direct", "https://www.google.com/search", "https://www.bing.com/search", "https://www.nerdwallet.com/",
    "https://www.creditkarma.com/", "https://www.zillow.com/", "https://www.kbb.com/",
    "https://www.facebook.com/", "https://mail.bank-news.example/campaign",
)

PRODUCTS = (
    "checking", "savings", "credit_card", "mortgage", "heloc", "auto_loan", "personal_loan", "investing",
    "retirement", "insurance",
)

TILES: dict[str, str] = {
    "tile_cash_back_card": "credit_card",
    "tile_balance_transfer": "credit_card",
    "tile_mortgage_prequal": "mortgage",
    "tile_refinance_rates": "mortgage",
    "tile_heloc": "heloc",
    "tile_auto_loan": "auto_loan",
    "tile_personal_loan": "personal_loan",
    "tile_high_yield_savings": "savings",
    "tile_open_checking": "checking",
    "tile_invest_robo": "investing",
    "tile_ira_rollover": "retirement",
    "tile_insurance_quote": "insurance",
    "tile_security_center": "checking",
}


GOOGLE, BING = "https://www.google.com/search", "https://www.bing.com/search"

INTENTS: tuple[Intent, ...] = (
    Intent(
        "credit_card_shopping", "Compares rewards credit cards before applying",
        {"/credit-cards": 3, "/credit-cards/cash-back": 3, "/credit-cards/travel-rewards": 2,
         "/credit-cards/compare": 3, "/credit-cards/balance-transfer": 1, "/credit-cards/prequalify": 1.5,
         "/credit-cards/apply": 1.5},
        ("best cash back card", "travel rewards card annual fee", "credit card compare", "card apr"),
        depth=1.6, dwell_s=45, referrers={GOOGLE: 0.3, "https://www.nerdwallet.com/": 0.4, "direct": 0.3},
        events={"click": 0.45},
        tiles=("tile_cash_back_card",),
    ),
    Intent(
        "balance_transfer", "Looks for a 0% balance transfer to pay down card debt",
        {"/credit-cards": 3, "/credit-cards/balance-transfer": 3, "/credit-cards/compare": 3,
         "/credit-cards/cash-back": 1, "/calculators/debt-payoff": 2, "/personal-loans": 1, "/credit-cards/apply": 1},
        ("balance transfer 0 apr", "transfer balance fee", "pay off credit card debt"),
        depth=1.2, dwell_s=55, referrers={"https://www.creditkarma.com/": 0.45, GOOGLE: 0.35, "direct": 0.2},
        events={"calculator": 0.25, "download": 0.1},
        tiles=("tile_balance_transfer", "tile_personal_loan"),
    ),
    Intent(
        "home_purchase", "First-time or move-up buyer researching a purchase mortgage",
        {"/mortgage": 3, "/mortgage/purchase": 2, "/mortgage/first-time-buyer": 1.5, "/mortgage/rates": 3,
         "/mortgage/calculator": 3, "/mortgage/refinance": 1, "/mortgage/apply": 1},
        ("mortgage preapproval", "first time home buyer", "down payment assistance", "30 year fixed rate"),
        depth=1.3, dwell_s=80, devices=(0.75, 0.2, 0.05),
        referrers={"https://www.zillow.com/": 0.45, GOOGLE: 0.35, "direct": 0.2}, length=9,
        events={"calculator": 0.3, "download": 0.1},
        tiles=("tile_mortgage_prequal",),
    ),
    Intent(
        "refinance", "Homeowner checking whether refinancing or a HELOC lowers their payment",
        {"/mortgage": 3, "/mortgage/refinance": 2, "/mortgage/rates": 3, "/mortgage/calculator": 3,
         "/home-equity/heloc": 1.5, "/mortgage/purchase": 1, "/rates": 1},
        ("refinance rates today", "cash out refinance", "heloc rate", "refi closing costs"),
        depth=1.0, dwell_s=70, devices=(0.7, 0.25, 0.05),
        referrers={"https://mail.bank-news.example/campaign": 0.4, "direct": 0.35, BING: 0.25}, length=8,
        events={"calculator": 0.15, "click": 0.2},
        tiles=("tile_refinance_rates", "tile_heloc"),
    ),
    Intent(
        "auto_loan", "Financing a car purchase",
        {"/auto-loans": 4, "/auto-loans/rates": 4, "/auto-loans/calculator": 3, "/auto-loans/apply": 1.5,
         "/rates": 1},
        ("auto loan rates", "car loan calculator", "used car financing"),
        depth=1.4, dwell_s=40, devices=(0.45, 0.5, 0.05),
        referrers={"https://www.kbb.com/": 0.5, GOOGLE: 0.3, "direct": 0.2}, length=6,
        tiles=("tile_auto_loan",),
    ),
    Intent(
        "debt_consolidation", "Wants a personal loan to consolidate debt",
        {"/personal-loans": 3, "/personal-loans/debt-consolidation": 2, "/personal-loans/calculator": 2,
         "/calculators/debt-payoff": 2, "/credit-cards/balance-transfer": 1.5, "/personal-loans/apply": 1.5,
         "/calculators/budget": 1},
        ("debt consolidation loan", "personal loan rates", "consolidate credit card debt"),
        depth=1.4, dwell_s=50, referrers={"https://www.creditkarma.com/": 0.4, GOOGLE: 0.4, "direct": 0.2},
        events={"calculator": 0.2},
        tiles=("tile_personal_loan", "tile_balance_transfer"),
    ),
    Intent(
        "savings_rates", "Rate-shops high-yield savings and CDs",
        {"/savings": 3, "/savings/high-yield": 4, "/savings/cd": 3, "/savings/money-market": 2,
         "/rates/savings": 4, "/rates": 2, "/calculators/savings-goal": 1.5, "/savings/open": 1},
        ("high yield savings rate", "cd rates 12 month", "money market vs savings"),
        depth=0.9, dwell_s=35, referrers={"https://www.nerdwallet.com/": 0.4, GOOGLE: 0.35, "direct": 0.25},
        events={"click": 0.15},
        tiles=("tile_high_yield_savings",),
    ),
    Intent(
        "new_checking", "Opening a checking account (switching banks, student)",
        {"/checking": 4, "/checking/total-checking": 2, "/checking/student": 1.5, "/checking/compare": 3,
         "/checking/fees": 2, "/savings": 1.5, "/rates": 1, "/checking/open": 2, "/branch-locator/{id}": 1},
        ("checking account bonus", "no fee checking", "open account online", "branch near me"),
        depth=1.7, dwell_s=35, devices=(0.45, 0.5, 0.05),
        referrers={GOOGLE: 0.4, "https://www.facebook.com/": 0.3, "direct": 0.3},
        events={"click": 0.3, "form_start": 0.1},
        tiles=("tile_open_checking",),
    ),
    Intent(
        "retirement_investing", "Planning retirement: IRA, 401k rollover, managed investing",
        {"/investing": 3, "/retirement/ira": 4, "/retirement/rollover-401k": 4, "/retirement/calculator": 3,
         "/investing/robo-advisor": 2, "/investing/advisor": 2, "/investing/self-directed": 1.5,
         "/investing/open": 1},
        ("roth ira vs traditional", "rollover 401k", "retirement calculator", "robo advisor fees"),
        depth=1.0, dwell_s=90, devices=(0.8, 0.15, 0.05), referrers={GOOGLE: 0.45, "direct": 0.55}, length=8,
        tiles=("tile_ira_rollover", "tile_invest_robo"),
    ),
    Intent(
        "fraud_report", "Urgently reporting fraud, a lost card or a disputed charge",
        {"/support": 3, "/support/contact": 3, "/security/report-fraud": 2, "/security/lost-card": 2,
         "/support/dispute-transaction": 2, "/security/identity-theft": 1, "/login": 2, "/support/faq": 1},
        ("unauthorized charge", "report stolen card", "dispute a transaction", "fraud phone number"),
        search_rate=0.2, depth=2.0, dwell_s=15, devices=(0.25, 0.7, 0.05), referrers={"direct": 0.85, GOOGLE: 0.15},
        length=5, events={"form_start": 0.35, "click": 0.2},
        tiles=("tile_security_center",),
    ),
    Intent(
        "login_help", "Cannot sign in: password reset, enrolment in online banking",
        {"/login": 3, "/login/forgot-password": 2, "/support": 3, "/support/contact": 2, "/support/faq": 2,
         "/enroll": 1.5, "/support/article/{id}": 1, "/security/report-fraud": 0.5},
        ("reset password", "locked out of account", "enroll online banking"),
        search_rate=0.15, depth=2.0, dwell_s=20, devices=(0.3, 0.65, 0.05), referrers={"direct": 0.9, GOOGLE: 0.1},
        length=5, events={"login": 0.35},
        tiles=("tile_security_center", "tile_open_checking"),
    ),
    Intent(
        "insurance_quote", "Getting a home, auto or life insurance quote",
        {"/insurance": 4, "/insurance/home": 3, "/insurance/auto": 3, "/insurance/life": 3,
         "/insurance/quote": 2, "/support/contact": 0.5},
        ("home insurance quote", "life insurance cost", "bundle auto insurance"),
        depth=1.2, dwell_s=50, referrers={GOOGLE: 0.5, "https://www.facebook.com/": 0.2, "direct": 0.3},
        length=6, tiles=("tile_insurance_quote",),
    ),
    Intent(
        "casual_browsing", "Browsing without a clear goal: news, careers, rates glance",
        {"/": 4, "/about": 2, "/careers": 2, "/careers/jobs/{id}": 2, "/newsroom/{id}": 2, "/rates": 2,
         "/branch-locator/{id}": 1, "/checking": 1, "/credit-cards": 1, "/savings": 1, "/investing": 1},
        ("bank hours", "careers", "routing number"),
        search_rate=0.05, depth=0.3, dwell_s=20, devices=(0.5, 0.45, 0.05),
        referrers={GOOGLE: 0.35, "https://www.facebook.com/": 0.3, "direct": 0.35}, length=5,
        tiles=(),
    ),
)

INTENT_NAMES: tuple[str, ...] = tuple(i.name for i in INTENTS)
SEGMENTS = ("mass", "affluent", "student", "small_business", "senior")
