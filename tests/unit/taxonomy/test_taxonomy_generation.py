"""Taxonomy file, generation review and labelling logic, with a scripted LLM (the real one: integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.core.contract import Event
from training.core.sessionize import Session
from training.taxonomy.generate import TaxonomyConfig, grounding, review
from training.taxonomy.labelling import Labeller
from training.taxonomy.llm import LLMClient, LLMConfig
from training.taxonomy.stage import lookup_f1
from training.taxonomy.taxonomy import Label, Taxonomy, merge_same_name, slug


class ScriptedBackend:
    """Answers by a function of the user prompt, and records every prompt."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def identity(self) -> str:
        return "scripted:v1"

    def chat(self, messages: list[dict[str, Any]], json_schema: Any, max_tokens: int, *, seed: int | None = None
             ) -> str:
        self.prompts.append(messages[-1]["content"])
        return json.dumps(self.answer(messages[0]["content"], messages[-1]["content"]))


def client_for(answer) -> tuple[LLMClient, ScriptedBackend]:
    backend = ScriptedBackend(answer)
    return LLMClient(LLMConfig(backend="scripted", cache_dir=None), backend=backend), backend


CARDS = Label("credit_card_shopping", "Compares cards", ("/credit-cards", "/credit-cards/compare"), ("card apr",))
CARDS2 = Label("card_comparison", "Compares cards too", ("/credit-cards", "/credit-cards/compare"), ("card apr",))
MORTGAGE = Label("refinance", "Refinances a mortgage", ("/mortgage/refinance", "/mortgage/rates"), ("refi rates",))
FRAUD = Label("fraud_report", "Reports a stolen card", ("/security/fraud", "/support/contact"), ("lost card",))


def session(sid: str, urls: list[str], query: str | None = None) -> Session:
    events = tuple(Event(anonymous_id=sid, ts=1_790_000_000_000 + i * 1000, event_type="page_view", url=u,
                         query=query if i == 0 else None) for i, u in enumerate(urls))
    return Session(f"{sid}@1", sid, events)


def test_slug_and_merge_same_name_pool_evidence() -> None:
    assert slug("Credit Card  Shopping!") == "credit_card_shopping"
    merged = merge_same_name([CARDS, Label("Credit-Card Shopping", "dup", ("/credit-cards/apply",))])
    assert [m.name for m in merged] == ["credit_card_shopping"]
    assert merged[0].description == "Compares cards"
    assert merged[0].pages == ("/credit-cards", "/credit-cards/compare", "/credit-cards/apply")


def test_taxonomy_file_round_trips_and_versions_by_content(tmp_path: Path) -> None:
    tax = Taxonomy((CARDS, MORTGAGE), "cluster_first", "scripted:v1")
    tax.save(tmp_path / "t.yaml")
    loaded = Taxonomy.load(tmp_path / "t.yaml")
    assert loaded == tax and loaded.version == tax.version
    edited = (tmp_path / "t.yaml").read_text().replace("Compares cards", "Shops for a rewards card")
    (tmp_path / "e.yaml").write_text(edited)
    assert Taxonomy.load(tmp_path / "e.yaml").version != tax.version


@pytest.mark.parametrize(("text", "message"), [
    ("labels: []\n", "non-empty 'labels'"),
    ("labels:\n- name: cards\n", "labels[0] needs 'name' and 'description'"),
    ("labels:\n- {name: Bad Name, description: x}\n", "must match"),
    ("labels:\n- {name: cards, description: a}\n- {name: cards, description: b}\n", "duplicate label names"),
])
def test_malformed_taxonomy_files_are_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        Taxonomy.load(tmp_path / "t.yaml")


def test_grounding_prefers_names_made_of_the_evidence() -> None:
    pages, searches = ("/auto-loans/rates", "/auto-loans/calculator"), ("used car loan",)
    assert grounding("auto_loan_rates", pages, searches) == 1.0
    assert grounding("fabio_fabio", pages, searches) == 0.0
    assert 0 < grounding("car_loan_2023", pages, searches) < 1


def test_review_merges_only_similar_pairs_the_llm_confirms() -> None:
    client, backend = client_for(lambda system, user: {"same": True})
    tax = Taxonomy((CARDS, MORTGAGE, CARDS2, FRAUD), "cluster_first")
    out = review(tax, client, TaxonomyConfig(min_labels=2, max_labels=20))
    assert out.names == ("credit_card_shopping", "refinance", "fraud_report")
    assert out.notes["merged"] == ["credit_card_shopping <- card_comparison"]
    assert len(backend.prompts) == 1 and "card_comparison" in backend.prompts[0]


def test_review_keeps_pairs_the_llm_rejects_and_respects_the_bounds() -> None:
    client, _ = client_for(lambda system, user: {"same": False})
    tax = Taxonomy((CARDS, MORTGAGE, CARDS2, FRAUD), "cluster_first")
    assert len(review(tax, client, TaxonomyConfig(min_labels=2, max_labels=20)).labels) == 4
    capped = review(tax, client, TaxonomyConfig(min_labels=2, max_labels=3))
    assert len(capped.labels) == 3 and "card_comparison" not in capped.names
    yes, backend = client_for(lambda system, user: {"same": True})
    assert len(review(tax, yes, TaxonomyConfig(min_labels=4)).labels) == 4 and not backend.prompts


def test_labeller_shortlists_the_matching_label_in_a_per_session_order() -> None:
    tax = Taxonomy((CARDS, MORTGAGE, FRAUD), "cluster_first")
    labeller = Labeller(tax, shortlist=2)
    cards = session("A1", ["/credit-cards", "/credit-cards/compare"], "card apr")
    assert "credit_card_shopping" in labeller.candidates(cards) and len(labeller.candidates(cards)) == 2
    orders = {labeller.candidates(session(f"A{i}", ["/credit-cards", "/mortgage/refinance"]))[0] for i in range(40)}
    assert len(orders) == 2  # position bias of a small model is spread over the candidates
    system, schema = labeller.prompt(("refinance", "fraud_report"))
    assert schema.model_json_schema()["properties"]["label"]["enum"] == ["refinance", "fraud_report"]
    assert "/mortgage/refinance" in system and "credit_card_shopping" not in system


def test_labeller_records_none_when_the_llm_never_answers_validly() -> None:
    tax = Taxonomy((CARDS, MORTGAGE), "cluster_first")
    client, _ = client_for(lambda system, user: {"label": "not_in_the_enum"})
    out = Labeller(tax).label(client, [session("A1", ["/credit-cards"])], progress=False)
    assert out[0].label is None and set(out[0].candidates) == {"credit_card_shopping", "refinance"}
    good, backend = client_for(lambda system, user: {"label": "refinance"})
    assert Labeller(tax).label(good, [session("A2", ["/mortgage/refinance"])], progress=False)[0].label == "refinance"
    assert backend.prompts[0].startswith("Pages visited: /mortgage/refinance")


def test_lookup_f1_by_hand() -> None:
    # train: a -> x (2 of 3), b -> y; test: a->x right, b->y wrong (z), unseen c -> majority x, right
    f1 = lookup_f1(["a", "a", "a", "b"], ["x", "x", "y", "y"], ["a", "b", "c"], ["x", "z", "x"])
    assert f1 == pytest.approx(2 / 3)
    assert np.isclose(lookup_f1(["a"], ["x"], ["a"], ["y"]), 0.0)
