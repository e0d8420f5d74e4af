"""The intent taxonomy: a small, human-editable, versioned list of named intents.

Saved as YAML so a person can review, rename, merge or pin it (`intent taxonomy --taxonomy FILE` reuses a
pinned file instead of asking the LLM again). The version is a fingerprint of the label names and
descriptions, so an edited file gets a new version and heads trained on the old one are recognizable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

NAME_PATTERN = r"^[a-z][a-z0-9_]{2,39}$"
"""Label names are snake_case identifiers: stable keys for the head, the gateway and the labels file."""


def slug(text: str) -> str:
    """'Credit Card Shopping!' -> 'credit_card_shopping' (the key that deduplicates names)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "_".join(words)[:40] or "unnamed"


@dataclass(frozen=True)
class Label:
    """One intent. `pages` and `searches` are the evidence it was named from (they also shortlist labels)."""

    name: str
    description: str
    pages: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    """Distinctive event types of the evidence (calculator, form_start), when the generator recorded them."""
    source: str = "llm"
    """'llm' when the LLM's name and description passed validation, 'evidence' when the deterministic
    fallback built them from the evidence (`generate.evidence_label`), 'pinned' for hand-edited files."""

    def document(self, description: bool = True) -> str:
        """The label as text for retrieval: name words, description, typical pages and searches."""
        parts = [self.name.replace("_", " "), *self.pages, *self.searches]
        return " ".join([*parts, self.description] if description else parts)


@dataclass(frozen=True)
class Taxonomy:
    labels: tuple[Label, ...]
    method: str
    """How it was made: 'cluster_first', 'minibatch' or 'pinned'."""
    model: str = ""
    """The LLM that named the labels."""
    notes: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"taxonomy has duplicate label names: {sorted(n for n in names if names.count(n) > 1)}")
        bad = [n for n in names if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"label names must match {NAME_PATTERN}: {bad}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def version(self) -> str:
        doc = json.dumps([[label.name, label.description] for label in self.labels])
        return "tax-" + hashlib.sha1(doc.encode()).hexdigest()[:10]

    def get(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)

    def save(self, path: Path | str) -> None:
        doc = {"version": self.version, "method": self.method, "model": self.model,
               "labels": [{"name": lb.name, "description": lb.description, "pages": list(lb.pages),
                           "searches": list(lb.searches), "events": list(lb.events), "source": lb.source}
                          for lb in self.labels]}
        header = ("# Intent taxonomy. Edit names/descriptions freely, then pin it with\n"
                  "#   intent taxonomy --taxonomy <this file>\n"
                  "# (the version is recomputed from names and descriptions on load).\n")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110))

    @classmethod
    def load(cls, path: Path | str) -> Taxonomy:
        doc = yaml.safe_load(Path(path).read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list) or not doc["labels"]:
            raise ValueError(f"{path}: a taxonomy file needs a non-empty 'labels' list")
        labels = []
        for i, row in enumerate(doc["labels"]):
            if not isinstance(row, dict) or "name" not in row or "description" not in row:
                raise ValueError(f"{path}: labels[{i}] needs 'name' and 'description'")
            labels.append(Label(str(row["name"]), str(row["description"]), tuple(row.get("pages") or ()),
                                tuple(row.get("searches") or ()), tuple(row.get("events") or ()),
                                str(row.get("source", "pinned"))))
        return cls(tuple(labels), str(doc.get("method", "pinned")), str(doc.get("model", "")))


def merge_same_name(labels: Iterable[Label]) -> list[Label]:
    """Labels whose slugs agree become one (first description kept, evidence pooled), in first-seen order."""
    merged: dict[str, Label] = {}
    for label in labels:
        key = slug(label.name)
        if key in merged:
            merged[key] = merge_pair(merged[key], label)
        else:
            merged[key] = replace(label, name=key)
    return list(merged.values())


def merge_pair(keep: Label, drop: Label, limit: int = 6) -> Label:
    return replace(keep, pages=_union(keep.pages, drop.pages, limit),
                   searches=_union(keep.searches, drop.searches, limit), events=_union(keep.events, drop.events, 4))


def _union(a: Sequence[str], b: Sequence[str], limit: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*a, *b]))[:limit]
