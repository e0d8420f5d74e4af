"""What characterizes a group of sessions, robust to any site: distinctive pages, path tokens, searches, events.

Public API (also used outside the taxonomy, e.g. by analytics reports):

    site = SiteStats.of(all_sessions)          # document frequencies over the whole site
    ev = cluster_evidence(group_sessions, site)  # -> Evidence: pages, searches, events, terms, candidate names

Every item (a normalized page, a URL path token, a search, an event type) is scored by

    share_in_group * log(lift) * log(1 / share_on_site),      lift = share_in_group / share_on_site

`share` is the fraction of sessions containing the item (document frequency). The first two factors are the
item's contribution to the group's KL divergence from the site: high when the group visits it far more often
than everyone else. The last factor is an IDF weight: a page that almost every session shares (sign-in,
home, generic help, the search page) has share_on_site near 1 and so a weight near 0, whatever its lift in
one group. Nothing is listed by hand; on another site its own near-universal pages fall out the same way.
Items with lift <= 1 are never distinctive. Words come from path segments split on `-`/`_` (`:id` and
numbers dropped), search phrases and event types; English function words (scikit-learn's stop-word list)
never become terms.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from training.core.featurizer import normalize_url
from training.core.sessionize import Session

_WORD = re.compile(r"[a-z]+")
GENERIC_EVENTS = frozenset({"page_view"})
"""The event every session has by definition of a web session; any other type can be evidence."""


def words(text: str) -> list[str]:
    """Lower-case alphabetic words, English function words and one-letter tokens dropped."""
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in ENGLISH_STOP_WORDS]


def path_words(page: str) -> list[str]:
    """'/personal/borrowing/car-finance/:id' -> ['personal', 'borrowing', 'car', 'finance']."""
    return [w for seg in page.split("/") if seg and seg != ":id" for w in words(seg.replace("-", " "))]


def _session_items(session: Session) -> tuple[set[str], set[str], set[str], set[str]]:
    pages = {normalize_url(e.url) for e in session.events}
    searches = {e.query.strip().lower() for e in session.events if e.query and e.query.strip()}
    events = {e.event_type for e in session.events if e.event_type not in GENERIC_EVENTS}
    tokens = {w for p in pages for w in path_words(p)} | {w for q in searches for w in words(q)}
    tokens |= {w for ev in events for w in words(ev.replace("_", " "))}
    return pages, searches, events, tokens


@dataclass(frozen=True)
class SiteStats:
    """Session document frequencies of pages, searches, event types and words over a whole site."""

    n: int
    pages: Counter
    searches: Counter
    events: Counter
    tokens: Counter

    @classmethod
    def of(cls, sessions: Iterable[Session]) -> SiteStats:
        pages, searches, events, tokens, n = Counter(), Counter(), Counter(), Counter(), 0
        for s in sessions:
            p, q, e, t = _session_items(s)
            pages.update(p)
            searches.update(q)
            events.update(e)
            tokens.update(t)
            n += 1
        if not n:
            raise ValueError("site statistics need at least one session")
        return cls(n, pages, searches, events, tokens)

    def share(self, kind: str, item: str) -> float:
        return getattr(self, kind)[item] / self.n


def distinctiveness(in_group: float, on_site: float) -> float:
    """share x log(lift) x IDF: 0 for anything not over-represented or present in (nearly) every session."""
    if in_group <= 0 or on_site <= 0 or in_group <= on_site:
        return 0.0
    return in_group * math.log(in_group / on_site) * math.log(1.0 / on_site)


@dataclass(frozen=True)
class Evidence:
    """A group's distinctive items, best first, each with its score; `terms` are single words."""

    size: int
    pages: tuple[tuple[str, float], ...]
    searches: tuple[tuple[str, float], ...]
    events: tuple[tuple[str, float], ...]
    terms: tuple[tuple[str, float], ...]

    @property
    def page_list(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.pages)

    @property
    def search_list(self) -> tuple[str, ...]:
        return tuple(q for q, _ in self.searches)

    @property
    def event_list(self) -> tuple[str, ...]:
        return tuple(e for e, _ in self.events)

    @property
    def vocabulary(self) -> frozenset[str]:
        """Every word of the evidence (what a name or description may be grounded in)."""
        return evidence_words(self.page_list, self.search_list, self.event_list)

    def text(self) -> str:
        """The evidence as one line of words, most distinctive first (for embedding similarity)."""
        return " ".join(t for t, _ in self.terms)

    def prompt(self) -> str:
        """The LLM's view of the group: a few short lines it can read."""
        lines = [f"Distinctive pages: {', '.join(self.page_list) or 'none'}",
                 f"Distinctive searches: {'; '.join(self.search_list) or 'none'}"]
        if self.events:
            lines.append(f"Distinctive actions: {', '.join(e.replace('_', ' ') for e in self.event_list)}")
        lines.append(f"Key words: {', '.join(t for t, _ in self.terms[:8])}")
        return "\n".join(lines)


def evidence_words(pages: Sequence[str] = (), searches: Sequence[str] = (), events: Sequence[str] = ()
                   ) -> frozenset[str]:
    out = {w for p in pages for w in path_words(p)} | {w for q in searches for w in words(q)}
    return frozenset(out | {w for e in events for w in words(e.replace("_", " "))})


def _ranked(counts: Counter, site: Counter, n_group: int, n_site: int, top: int, min_share: float
            ) -> tuple[tuple[str, float], ...]:
    scored = []
    for item, c in counts.items():
        share = c / n_group
        if share < min_share:
            continue
        score = distinctiveness(share, site[item] / n_site)
        if score > 0:
            scored.append((item, round(score, 4)))
    scored.sort(key=lambda x: (-x[1], x[0]))
    return tuple(scored[:top])


def cluster_evidence(group: Sequence[Session], site: SiteStats, top_pages: int = 5, top_searches: int = 3,
                     top_events: int = 2, top_terms: int = 10, min_share: float = 0.05) -> Evidence:
    """The group's distinctive pages, searches, event types and words against the whole site (see module doc).

    `min_share` ignores items fewer than that share of the group's sessions contain (one visitor's oddity).
    """
    if not group:
        raise ValueError("cluster_evidence needs a non-empty group")
    pages, searches, events, tokens = Counter(), Counter(), Counter(), Counter()
    for s in group:
        p, q, e, t = _session_items(s)
        pages.update(p)
        searches.update(q)
        events.update(e)
        tokens.update(t)
    n = len(group)
    return Evidence(
        size=n,
        pages=_ranked(pages, site.pages, n, site.n, top_pages, min_share),
        searches=_ranked(searches, site.searches, n, site.n, top_searches, min_share / 2),
        events=_ranked(events, site.events, n, site.n, top_events, min_share),
        terms=_ranked(tokens, site.tokens, n, site.n, top_terms, min_share),
    )


def candidate_names(ev: Evidence, limit: int = 5, max_words: int = 3, min_weight: float = 0.2) -> tuple[str, ...]:
    """Snake-case names built only from the evidence, best first (the LLM picks among these).

    In order: the most distinctive page's own words (its least distinctive words dropped), the top two
    terms, the top search phrase, the top term with the top event type, the top term alone. Words carry
    their term weight; a word that is no term of the group, or weighs under `min_weight` of the top term
    (generic across the site, like a section every product page sits under), is left out.
    """
    floor = (ev.terms[0][1] if ev.terms else 0.0) * min_weight
    weight = {t: w for t, w in ev.terms if w >= floor}

    def name_of(ws: Iterable[str]) -> str | None:
        kept = list(dict.fromkeys(w for w in ws if w in weight))
        if len(kept) > max_words:  # keep the heaviest words, in their original order
            heavy = set(sorted(kept, key=lambda w: -weight[w])[:max_words])
            kept = [w for w in kept if w in heavy]
        return "_".join(kept) or None

    options: list[str | None] = []
    for page in ev.page_list[:2]:
        options.append(name_of(path_words(page)))
    top = [t for t, _ in ev.terms]
    if len(top) >= 2:
        options.append(name_of(top[:2]))
    for q in ev.search_list[:2]:
        options.append(name_of(words(q)))
    if top and ev.events:
        options.append(name_of([top[0], *words(ev.event_list[0].replace("_", " "))]))
    if top:
        options.append(top[0])
    out = [o for o in dict.fromkeys(options) if o and len(o) >= 3]
    return tuple(out[:limit])
