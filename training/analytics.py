"""Intent analytics for people who read them: the distilled head's intents on a data directory, as one HTML page.

`intent report --data DIR --artifacts DIR` labels every session of DIR the way the taxonomy stage does
(featurizer -> encoder -> intent head from the artifacts) and writes one self-contained page
(`reports/intents.html`: inline CSS, plots as inline base64 PNGs from matplotlib, no script, nothing fetched at
view time). At the top a summary table; then one section per label: its share of sessions per week, by device
and by referrer, its most distinctive pages (URL paths) and searches, its conversion rate by product and the
head's confidence (the distribution of its max probability).

It reads only the data contract (events, and conversions when present), never a synthetic world's truth, so it
works on any data directory. Definitions:

- distinctive: lift = (share of the label's sessions with the term) / (share of all sessions with it), among
  terms in at least `min_sessions` of the label's sessions and more than the label's fair share; a page almost
  every session visits (sign-in, home) has a lift near 1 and does not come up.
- conversion: a visitor is linked to the customer of its first `login` event with a `customer_id`; a linked
  session converts to a product when that customer has a conversion of it within `conversion_days` after the
  session ends. The rate by product is over the label's linked sessions, beside the same rate over all linked
  sessions.
- privacy: no visitor or customer id is written; a page, search or referrer host is shown only when at least
  `min_visitors` distinct visitors have it (rarer referrers and devices are grouped as "other").
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.core.contract import Conversion, LoadReport, read_rows
from training.core.featurizer import normalize_referrer, normalize_url
from training.core.sessionize import Session

if TYPE_CHECKING:
    from training.sessions import SessionTable

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
OTHER = "other"


@dataclass(frozen=True)
class ReportConfig:
    conversion_days: float = 30.0
    """A linked session counts a conversion within this many days after it ends."""
    min_sessions: int = 5
    """A distinctive page or search is in at least this many of the label's sessions."""
    min_visitors: int = 5
    """Pages, searches and referrer hosts seen by fewer distinct visitors are never shown."""
    top_terms: int = 8
    """Distinctive pages and searches listed per label."""
    top_referrers: int = 8
    """Referrer hosts plotted (by sessions); the rest are grouped as 'other'."""
    batch: int = 2048
    """Sessions featurized and embedded per step of the progress bar."""


@dataclass(frozen=True)
class SessionFacts:
    """What the page reports about one session (the visitor id stays internal: it links conversions)."""

    week: str
    """Monday (UTC) of the week the session started, YYYY-MM-DD."""
    device: str
    referrer: str
    pages: frozenset[str]
    searches: frozenset[str]
    visitor: str
    end_ms: int


def week_start(ts_ms: int) -> str:
    """Monday (UTC) of the week holding `ts_ms`, as YYYY-MM-DD."""
    day = ts_ms // DAY_MS
    monday = day - (day + 3) % 7  # epoch day 0 was a Thursday
    return datetime.fromtimestamp(monday * 86_400, UTC).strftime("%Y-%m-%d")


def normalize_search(query: str) -> str:
    return " ".join(query.lower().split())


def session_facts(session: Session) -> SessionFacts:
    events = session.events
    devices = Counter(e.device.strip().lower() for e in events if e.device and e.device.strip())
    return SessionFacts(
        week=week_start(session.start_ms),
        device=devices.most_common(1)[0][0] if devices else "unknown",
        referrer=normalize_referrer(events[0].referrer),
        pages=frozenset(normalize_url(e.url) for e in events),
        searches=frozenset(normalize_search(e.query) for e in events if e.query and e.query.strip()),
        visitor=session.anonymous_id,
        end_ms=session.end_ms,
    )


# -- lift ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lift:
    term: str
    n_label: int
    """The label's sessions with the term."""
    share_label: float
    share_all: float
    lift: float


def lift_table(terms: Sequence[Iterable[str]], in_label: Sequence[bool], min_sessions: int = 5, top: int = 8,
               allowed: set[str] | None = None, everywhere: Counter | None = None) -> list[Lift]:
    """The terms most over-represented in the label's sessions against all sessions (lift > 1), best first.

    `terms[i]` are session i's distinct terms (pages or searches); `in_label[i]` whether it has the label;
    `allowed`, when given, limits the terms that may be shown (e.g. to those enough visitors share);
    `everywhere`, the sessions per term over all of `terms`, when the caller has counted them already.
    """
    mask = np.asarray(in_label, dtype=bool)
    n_all, n_label = len(mask), int(mask.sum())
    if n_label == 0 or n_all == 0:
        return []
    if everywhere is None:
        everywhere = Counter(t for row in terms for t in set(row))
    inside = Counter(t for i in np.flatnonzero(mask) for t in set(terms[i]))
    out = []
    for term, a in inside.items():
        if a < min_sessions or (allowed is not None and term not in allowed):
            continue
        share_label, share_all = a / n_label, everywhere[term] / n_all
        lift = share_label / share_all
        if lift > 1.0:
            out.append(Lift(term, a, share_label, share_all, lift))
    out.sort(key=lambda x: (-x.lift, -x.n_label, x.term))
    return out[:top]


# -- labelling -------------------------------------------------------------------------------------------------

@dataclass
class Labelled:
    labels: tuple[str, ...]
    """The head's labels, in its order."""
    predicted: np.ndarray
    """int [N]: index into `labels` of each session's most probable label."""
    confidence: np.ndarray
    """float [N]: that label's probability."""
    taxonomy_version: str = ""


def label_sessions(sessions: SessionTable, artifacts: Path, batch: int = 2048, progress: bool = True) -> Labelled:
    """Featurizer + encoder + intent head from `artifacts` on every session (from the table's columns), with a
    progress bar."""
    from tqdm.auto import tqdm

    from training.encoder.inference import embed_rows
    from training.pipeline import load_artifacts
    from training.taxonomy.distill import IntentHead

    featurizer, encoder, _ = load_artifacts(artifacts)
    head = IntentHead.load(artifacts / "intent_head.json")
    predicted = np.zeros(len(sessions), dtype=np.int64)
    confidence = np.zeros(len(sessions), dtype=np.float32)
    with tqdm(total=len(sessions), desc="intent labels", unit="session", disable=not progress) as bar:
        for start in range(0, len(sessions), batch):
            rows = np.arange(start, min(start + batch, len(sessions)))
            p = head.probabilities(embed_rows(encoder, featurizer, sessions, rows))
            predicted[rows] = p.argmax(axis=1)
            confidence[rows] = p.max(axis=1)
            bar.update(len(rows))
    return Labelled(head.labels, predicted, confidence, head.taxonomy_version)


# -- conversions -----------------------------------------------------------------------------------------------

def visitor_links(sessions: Iterable[Session]) -> dict[str, str]:
    """anonymous_id -> the customer of its first login event with a customer_id."""
    return facts_and_links(sessions)[1]


def facts_and_links(sessions: Iterable[Session]) -> tuple[list[SessionFacts], dict[str, str]]:
    """session_facts of each session and visitor_links, in one pass (each session's events are read once)."""
    facts: list[SessionFacts] = []
    first: dict[str, tuple[int, str]] = {}
    for s in sessions:
        facts.append(session_facts(s))
        for e in s.events:
            if e.customer_id and (s.anonymous_id not in first or e.ts < first[s.anonymous_id][0]):
                first[s.anonymous_id] = (e.ts, e.customer_id)
                break
    return facts, {visitor: customer for visitor, (_, customer) in first.items()}


def converted_products(facts: Sequence[SessionFacts], links: dict[str, str], conversions: Sequence[Conversion],
                       window_days: float) -> list[frozenset[str] | None]:
    """Per session: the products its linked customer converted to within the window after it (None: unlinked)."""
    by_customer: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for c in conversions:
        by_customer[c.customer_id].append((c.ts, c.product))
    window = window_days * DAY_MS
    out: list[frozenset[str] | None] = []
    for f in facts:
        customer = links.get(f.visitor)
        if customer is None:
            out.append(None)
            continue
        out.append(frozenset(p for ts, p in by_customer.get(customer, ()) if f.end_ms <= ts <= f.end_ms + window))
    return out


@dataclass(frozen=True)
class ProductRate:
    product: str
    converted: int
    rate: float
    site_rate: float

    @property
    def lift(self) -> float:
        return self.rate / self.site_rate if self.site_rate > 0 else 0.0


def conversion_rates(converted: Sequence[frozenset[str] | None],
                     in_label: Sequence[bool]) -> tuple[int, list[ProductRate]]:
    """(the label's linked sessions, rate by product beside all linked sessions' rate), by rate."""
    linked_all = [c for c in converted if c is not None]
    linked = [c for c, hit in zip(converted, in_label, strict=True) if hit and c is not None]
    if not linked_all:
        return 0, []
    site = Counter(p for c in linked_all for p in c)
    mine = Counter(p for c in linked for p in c)
    rates = [ProductRate(p, mine[p], mine[p] / len(linked) if linked else 0.0, n / len(linked_all))
             for p, n in site.items()]
    rates.sort(key=lambda r: (-r.rate, -r.site_rate, r.product))
    return len(linked), rates


# -- the numbers -----------------------------------------------------------------------------------------------

@dataclass
class LabelStats:
    name: str
    description: str
    sessions: int
    share: float
    weekly_share: list[float]
    device_share: dict[str, float]
    referrer_share: dict[str, float]
    confidence: np.ndarray
    pages: list[Lift]
    searches: list[Lift]
    linked_sessions: int
    conversions: list[ProductRate]


@dataclass
class IntentReport:
    data: str
    sessions: int
    visitors: int
    first_day: str
    last_day: str
    weeks: list[str]
    week_sessions: list[int]
    devices: dict[str, int]
    referrers: dict[str, int]
    labels: list[LabelStats]
    conversions_note: str
    """Why the page has no conversion rates ('' when it has them)."""
    linked_sessions: int
    config: ReportConfig
    taxonomy_note: str = ""
    head_taxonomy_version: str = ""
    seconds: dict = field(default_factory=dict)


def _grouped(values: Sequence[str], visitors: Sequence[str], keep: int, min_visitors: int) -> list[str]:
    """Values kept as themselves: the `keep` most common that at least `min_visitors` visitors share."""
    who: dict[str, set[str]] = defaultdict(set)
    for v, visitor in zip(values, visitors, strict=True):
        who[v].add(visitor)
    counts = Counter(values)
    return [v for v, _ in counts.most_common() if len(who[v]) >= min_visitors and v != OTHER][:keep]


def _visitor_supported(rows: Sequence[frozenset[str]], visitors: Sequence[str], min_visitors: int) -> set[str]:
    who: dict[str, set[str]] = defaultdict(set)
    for row, visitor in zip(rows, visitors, strict=True):
        for term in row:
            who[term].add(visitor)
    return {term for term, vs in who.items() if len(vs) >= min_visitors}


def _descriptions(artifacts: Path, labelled: Labelled) -> tuple[dict[str, str], str]:
    """Label -> description from artifacts/taxonomy.yaml, and a note when it is missing or does not match."""
    from training.taxonomy.taxonomy import Taxonomy

    path = artifacts / "taxonomy.yaml"
    if not path.exists():
        return {}, f"{path.name} is not in the artifacts: labels are shown without descriptions."
    try:
        taxonomy = Taxonomy.load(path)
    except (ValueError, OSError) as exc:
        return {}, f"{path.name} could not be read ({exc}): labels are shown without descriptions."
    note = ""
    if labelled.taxonomy_version and taxonomy.version != labelled.taxonomy_version:
        note = (f"the head was distilled for taxonomy {labelled.taxonomy_version}, but {path.name} is "
                f"{taxonomy.version}: descriptions may not match the labels.")
    return {lb.name: lb.description for lb in taxonomy.labels}, note


def load_conversions(data_dir: Path) -> list[Conversion]:
    path = data_dir / "conversions.jsonl"
    if not path.exists():
        return []
    report = LoadReport()
    rows = read_rows(path, Conversion, report)
    if report.problems:
        log.warning("%s", report.summary())
    return rows


def build_report(data_dir: Path, artifacts: Path, cfg: ReportConfig = ReportConfig(),
                 progress: bool = True) -> IntentReport:
    """Label every session of `data_dir` with the artifacts' head and compute what the page shows."""
    from training.sessions import load_session_table

    started = time.perf_counter()
    data_dir, artifacts = Path(data_dir), Path(artifacts)
    sessions = load_session_table(data_dir)  # columns; each session's events are built once, below
    if not sessions:
        raise ValueError(f"{data_dir}: no sessions to report on")
    loaded = time.perf_counter()
    labelled = label_sessions(sessions, artifacts, cfg.batch, progress)
    labelled_s = time.perf_counter()
    facts, links = facts_and_links(sessions)
    visitors = [f.visitor for f in facts]
    n = len(facts)

    weeks = sorted({f.week for f in facts})
    week_index = {w: i for i, w in enumerate(weeks)}
    week_of = np.array([week_index[f.week] for f in facts])
    week_sessions = np.bincount(week_of, minlength=len(weeks))

    kept_devices = _grouped([f.device for f in facts], visitors, 6, cfg.min_visitors)
    devices = [f.device if f.device in kept_devices else OTHER for f in facts]
    kept_refs = _grouped([f.referrer for f in facts], visitors, cfg.top_referrers, cfg.min_visitors)
    referrers = [f.referrer if f.referrer in kept_refs else OTHER for f in facts]
    device_counts, referrer_counts = Counter(devices), Counter(referrers)
    device_arr, referrer_arr = np.array(devices, dtype=object), np.array(referrers, dtype=object)

    page_rows = [f.pages for f in facts]
    search_rows = [f.searches for f in facts]
    pages_ok = _visitor_supported(page_rows, visitors, cfg.min_visitors)
    searches_ok = _visitor_supported(search_rows, visitors, cfg.min_visitors)
    page_counts = Counter(t for row in page_rows for t in row)
    search_counts = Counter(t for row in search_rows for t in row)

    conversions = load_conversions(data_dir)
    converted = converted_products(facts, links, conversions, cfg.conversion_days)
    linked_total = sum(c is not None for c in converted)
    if not conversions:
        note = "no conversions in this data (no conversions.jsonl, or it is empty)."
    elif not linked_total:
        note = ("no conversions can be tied to sessions: no session's visitor is linked to a customer "
                "(a login event with a customer_id).")
    else:
        note = ""

    descriptions, taxonomy_note = _descriptions(artifacts, labelled)
    stats = []
    for k, name in enumerate(labelled.labels):
        hit = labelled.predicted == k
        count = int(hit.sum())
        weekly = np.bincount(week_of[hit], minlength=len(weeks)) / np.maximum(week_sessions, 1)
        device_share = {d: float((hit & (device_arr == d)).sum()) / c for d, c in device_counts.most_common()}
        referrer_share = {r: float((hit & (referrer_arr == r)).sum()) / c for r, c in referrer_counts.most_common()}
        linked, rates = conversion_rates(converted, hit) if not note else (0, [])
        stats.append(LabelStats(
            name=name, description=descriptions.get(name, ""), sessions=count, share=count / n,
            weekly_share=[float(x) for x in weekly], device_share=device_share, referrer_share=referrer_share,
            confidence=labelled.confidence[hit],
            pages=lift_table(page_rows, hit, cfg.min_sessions, cfg.top_terms, pages_ok, page_counts),
            searches=lift_table(search_rows, hit, cfg.min_sessions, cfg.top_terms, searches_ok, search_counts),
            linked_sessions=linked, conversions=rates))
    first_ms, last_ms = int(sessions.start_ms.min()), int(sessions.end_ms.max())
    return IntentReport(
        data=str(data_dir), sessions=n, visitors=len(set(visitors)),
        first_day=datetime.fromtimestamp(first_ms / 1000, UTC).strftime("%Y-%m-%d"),
        last_day=datetime.fromtimestamp(last_ms / 1000, UTC).strftime("%Y-%m-%d"),
        weeks=weeks, week_sessions=[int(x) for x in week_sessions], devices=dict(device_counts.most_common()),
        referrers=dict(referrer_counts.most_common()), labels=stats, conversions_note=note,
        linked_sessions=linked_total, config=cfg, taxonomy_note=taxonomy_note,
        head_taxonomy_version=labelled.taxonomy_version,
        seconds={"load": round(loaded - started, 2), "label": round(labelled_s - loaded, 2),
                 "aggregate": round(time.perf_counter() - labelled_s, 2)})


# -- the page --------------------------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def overview_plot(report: IntentReport) -> str:
    """Weekly share of every label, stacked, beside the head's confidence per label (base64 PNG)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.6), layout="constrained")
    ax, box = fig.subplots(1, 2, width_ratios=(2.2, 1))
    x = np.arange(len(report.weeks))
    shares = np.array([s.weekly_share for s in report.labels])
    colors = _colors(len(report.labels))
    ax.stackplot(x, shares, labels=[s.name for s in report.labels], colors=colors)
    ax.set_xticks(x, report.weeks, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of the week's sessions")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max(len(x) - 1, 1))
    ax.set_title("intent mix per week (week starting)", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    shown = [s for s in report.labels if len(s.confidence)][::-1]
    if shown:
        parts = box.boxplot([s.confidence for s in shown], orientation="horizontal", widths=0.6, showfliers=False,
                            medianprops={"color": "black"}, patch_artist=True)
        for patch, s in zip(parts["boxes"], shown, strict=True):
            patch.set_facecolor(colors[report.labels.index(s)])
        box.set_yticks(np.arange(1, len(shown) + 1), [s.name for s in shown], fontsize=8)
    box.set_xlim(0, 1)
    box.set_xlabel("head's max probability")
    box.set_title("confidence per label (box: quartiles)", fontsize=10)
    return _png(fig)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    order = [*range(0, 20, 2), *range(1, 20, 2)]  # the ten strong shades first, then their light twins
    return [cmap(order[i % 20]) for i in range(n)]


def label_plot(report: IntentReport, stats: LabelStats, color) -> str:
    """One label's four panels: weekly share, share by device, share by referrer, confidence (base64 PNG)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.4), layout="constrained")
    (a, b), (c, d) = fig.subplots(2, 2)
    x = np.arange(len(report.weeks))
    a.plot(x, np.array(stats.weekly_share) * 100, marker="o", color=color)
    a.axhline(stats.share * 100, color="grey", ls="--", lw=1, label=f"overall {stats.share:.1%}")
    a.set_xticks(x, report.weeks, rotation=45, ha="right", fontsize=7)
    a.set_ylim(bottom=0)
    a.set_ylabel("% of the week's sessions")
    a.set_title("share per week (week starting)", fontsize=10)
    a.legend(fontsize=8, frameon=False)
    for ax, shares, title in ((b, stats.device_share, "share by device"),
                              (c, stats.referrer_share, "share by referrer (entry)")):
        names = list(shares)[::-1]
        ax.barh(names, [shares[k] * 100 for k in names], color=color)
        ax.axvline(stats.share * 100, color="grey", ls="--", lw=1)
        ax.set_xlabel("% of those sessions with this label (dashed: overall)")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    if len(stats.confidence):
        d.hist(stats.confidence, bins=np.linspace(0, 1, 21), color=color)
        d.axvline(float(np.median(stats.confidence)), color="black", lw=1,
                  label=f"median {np.median(stats.confidence):.2f}")
        d.legend(fontsize=8, frameon=False)
    d.set_xlim(0, 1)
    d.set_xlabel("head's max probability")
    d.set_ylabel("sessions")
    d.set_title("confidence of the head on these sessions", fontsize=10)
    return _png(fig)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta, .note { color: #555; } .note { background: #fff8e1; padding: 0.4em 0.7em; border-left: 3px solid #f0c000; }
.desc { font-style: italic; } td.desc { min-width: 16em; } .grid { display: flex; flex-wrap: wrap; gap: 2em; }
img { max-width: 100%; height: auto; } code { font-size: 0.92em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _anchor(name: str) -> str:
    return "intent-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)


def _terms_table(rows: list[Lift], what: str) -> str:
    if not rows:
        return f"<p class='meta'>no distinctive {_e(what)} (none over-represented in enough sessions).</p>"
    body = "".join(f"<tr><td><code>{_e(r.term)}</code></td><td class='num'>{_pct(r.share_label)}</td>"
                   f"<td class='num'>{_pct(r.share_all)}</td><td class='num'>{r.lift:.1f}x</td></tr>" for r in rows)
    return (f"<table><tr><th>{_e(what)}</th><th class='num'>in this intent's sessions</th>"
            f"<th class='num'>in all sessions</th><th class='num'>lift</th></tr>{body}</table>")


def _conversion_block(report: IntentReport, s: LabelStats) -> str:
    if report.conversions_note:
        return f"<p class='meta'>{_e(report.conversions_note)}</p>"
    if not s.linked_sessions:
        return "<p class='meta'>none of this intent's sessions belongs to a linked (logged-in) visitor.</p>"
    rows = [r for r in s.conversions if r.converted or r.site_rate > 0][:10]
    body = "".join(f"<tr><td>{_e(r.product)}</td><td class='num'>{r.converted}</td><td class='num'>{_pct(r.rate)}</td>"
                   f"<td class='num'>{_pct(r.site_rate)}</td><td class='num'>{r.lift:.1f}x</td></tr>" for r in rows)
    return (f"<p class='meta'>{s.linked_sessions:,} of its sessions are from linked visitors; a session converts "
            f"when its customer converts within {report.config.conversion_days:g} days after it.</p>"
            f"<table><tr><th>product</th><th class='num'>sessions converted</th><th class='num'>rate</th>"
            f"<th class='num'>all linked sessions</th><th class='num'>ratio</th></tr>{body}</table>")


def _top_conversion(report: IntentReport, s: LabelStats) -> str:
    if report.conversions_note or not s.linked_sessions:
        return "&mdash;"
    best = max((r for r in s.conversions if r.converted >= 3 and r.lift > 1.0), key=lambda r: r.lift, default=None)
    if best is None:
        return "&mdash;"
    return f"{_e(best.product)} {_pct(best.rate)} ({best.lift:.1f}x)"


def render_html(report: IntentReport) -> str:
    """The whole page as one string: every text escaped, every image inline."""
    colors = _colors(len(report.labels))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Intents in {_e(Path(report.data).name or report.data)}</title>", f"<style>{CSS}</style>",
        "</head><body>", "<h1>Intents in the web sessions</h1>",
        f"<p class='meta'>data <code>{_e(report.data)}</code>: {report.sessions:,} sessions of {report.visitors:,} "
        f"visitors, {_e(report.first_day)} to {_e(report.last_day)}; every session labelled by the distilled intent "
        f"head (taxonomy {_e(report.head_taxonomy_version or 'unknown')}). Generated {_e(generated)}.</p>",
    ]
    if report.taxonomy_note:
        parts.append(f"<p class='note'>{_e(report.taxonomy_note)}</p>")
    if report.conversions_note:
        parts.append(f"<p class='note'>{_e(report.conversions_note)}</p>")
    parts.append(
        "<p class='meta'>How to read it: <b>share</b> is the fraction of sessions the head gives the label; "
        "<b>lift</b> of a page or search is how much more often the label's sessions contain it than sessions "
        "overall (1.0x = no more than everyone: pages nearly every session visits never stand out); "
        "<b>confidence</b> is the head's probability for the label it chose.</p>")
    rows = []
    for s, _ in zip(report.labels, colors, strict=True):
        median = f"{np.median(s.confidence):.2f}" if len(s.confidence) else "&mdash;"
        pages = ", ".join(f"<code>{_e(p.term)}</code>" for p in s.pages[:3]) or "&mdash;"
        searches = ", ".join(f"&ldquo;{_e(q.term)}&rdquo;" for q in s.searches[:2]) or "&mdash;"
        rows.append(f"<tr><td><a href='#{_anchor(s.name)}'>{_e(s.name)}</a></td>"
                    f"<td class='desc'>{_e(s.description)}</td><td class='num'>{s.sessions:,}</td>"
                    f"<td class='num'>{_pct(s.share)}</td><td class='num'>{median}</td><td>{pages}</td>"
                    f"<td>{searches}</td><td>{_top_conversion(report, s)}</td></tr>")
    parts.append("<h2 id='summary'>Summary</h2><table><tr><th>intent</th><th>description</th>"
                 "<th class='num'>sessions</th><th class='num'>share</th><th class='num'>median confidence</th>"
                 "<th>most distinctive pages</th><th>searches</th><th>most over-represented conversion</th></tr>"
                 + "".join(rows) + "</table>")
    parts.append(_img(overview_plot(report), "weekly share of every intent, stacked, and the head's "
                                                   "confidence per intent"))
    for s, color in zip(report.labels, colors, strict=True):
        parts.append(f"<h2 id='{_anchor(s.name)}'>{_e(s.name)}</h2>")
        if s.description:
            parts.append(f"<p class='desc'>{_e(s.description)}</p>")
        parts.append(f"<p class='meta'>{s.sessions:,} sessions ({_pct(s.share)} of all)"
                     + (f"; median confidence {np.median(s.confidence):.2f}, {np.mean(s.confidence < 0.5):.0%} "
                        f"below 0.5" if len(s.confidence) else "") + ".</p>")
        if not s.sessions:
            parts.append("<p class='note'>the head gave no session of this data this label.</p>")
            continue
        parts.append(_img(label_plot(report, s, color), f"{s.name}: share per week, by device, by referrer, "
                                                         "and the head's confidence"))
        parts.append("<div class='grid'><div><h3>Distinctive pages</h3>" + _terms_table(s.pages, "page (URL path)")
                     + "</div><div><h3>Distinctive searches</h3>" + _terms_table(s.searches, "search") + "</div></div>")
        parts.append("<h3>Conversion by product</h3>" + _conversion_block(report, s))
    parts.append(f"<p class='meta'>Pages, searches and referrers shown are shared by at least "
                 f"{report.config.min_visitors} visitors; no visitor or customer id is on this page. Made by "
                 f"<code>intent report</code> (training/analytics.py) in {sum(report.seconds.values()):.1f} s "
                 f"before rendering.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(data_dir: Path, artifacts: Path, out: Path, cfg: ReportConfig = ReportConfig(),
                 progress: bool = True) -> IntentReport:
    """build_report + render_html into `out` (parents created)."""
    report = build_report(data_dir, artifacts, cfg, progress)
    started = time.perf_counter()
    page = render_html(report)
    report.seconds["render"] = round(time.perf_counter() - started, 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    log.info("wrote %s (%.0f kB): %d labels over %d sessions", out, out.stat().st_size / 1024, len(report.labels),
             report.sessions)
    return report
