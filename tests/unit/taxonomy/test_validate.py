"""The label validator's accept and reject cases, and the naming path around it (scripted LLM)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from training.core.contract import Event
from training.core.sessionize import Session
from training.taxonomy.evidence import SiteStats, cluster_evidence, evidence_words
from training.taxonomy.generate import NAME_SYSTEM, describe, evidence_label, name_cluster
from training.taxonomy.llm import LLMClient, LLMConfig
from training.taxonomy.validate import LabelRejected, LabelValidator, english_words, related, shares_word

FRAUD = evidence_words(["/security/fraud", "/support/contact", "/help/card-lost-or-stolen"],
                       ["report stolen card", "unauthorized charge"], ["form_start"])
OLD_PROMPT = ("You name the intent of a group of visitors to a bank's website. Reply with JSON: a short snake_case "
              "name for the visitors' goal (2-4 words) and a one-sentence description of what they want (at most "
              "15 words).")


def validator(**kw: Any) -> LabelValidator:
    return LabelValidator(FRAUD, instructions=kw.pop("instructions", OLD_PROMPT), **kw)


def test_the_word_list_is_a_real_english_dictionary_without_proper_nouns() -> None:
    words = english_words()
    assert len(words) > 50_000 and {"fraud", "stolen", "card", "report", "mortgage"} <= words
    assert "boston" not in words and "finance" in words


@pytest.mark.parametrize(("name", "description"), [
    ("stolen_card", "Customers report a stolen card or an unauthorized charge."),
    ("fraud", "Visitors are looking for help with fraud on their card."),
    ("security_fraud_report", "Visitors want to report fraud and lost cards to security."),
])
def test_good_labels_are_accepted(name: str, description: str) -> None:
    validator().check(name, description)


@pytest.mark.parametrize(("name", "reason"), [
    ("credit_card_compare_2023", "no digits or years"),
    ("favicon_2", "no digits or years"),
    ("boston", "neither an English word nor a word of the evidence"),
    ("stolen_card_fraud_report_form", "1-4 lower-case words"),
    ("Stolen_Card", "1-4 lower-case words"),
    ("finance", "shares no word with the evidence"),
    ("online_banking_sign", "shares no word with the evidence"),
])
def test_bad_names_are_rejected_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(LabelRejected, match=reason):
        validator().check_name(name)


@pytest.mark.parametrize(("description", "reason"), [
    ("A short, snake-case name for the visitors' goal (2-4 words) about stolen cards", "repeats the instructions"),
    ("One sentence of what they want, at most 15 words, about a stolen card.", "repeats the instructions"),
    ("Boston, MA, is a city with a rich history.", "mentions none of the evidence"),
    ("Card.", "4-25 words"),
    ("Customers report a stolen card. Then they call support about the charge.", "single sentence"),
    (" ".join(["Customers report a stolen card"] * 6), "4-25 words"),
    ("Stolen card, stolen charge, stolen phone, stolen wallet", "repeats 'stolen' 4 times"),
])
def test_bad_descriptions_are_rejected_with_the_reason(description: str, reason: str) -> None:
    with pytest.raises(LabelRejected, match=reason):
        validator().check_description(description)


def test_the_relation_between_a_name_and_its_evidence_is_a_shared_word_or_stem() -> None:
    assert related("loan", "loans") and related("consolidate", "consolidation") and not related("car", "card")
    assert shares_word(["debt", "consolidation"], {"consolidate", "loan"}) == "consolidation"
    assert shares_word(["boston"], FRAUD) is None


def test_the_embedding_rejects_what_is_fluent_but_unrelated() -> None:
    pytest.importorskip("sentence_transformers")
    from training.taxonomy.validate import default_embedder

    embedder = default_embedder()
    assert embedder is not None
    check = validator(embedder=embedder, evidence_text=" ".join(sorted(FRAUD)))
    check.check("stolen_card", "Customers report a stolen card or an unauthorized charge.")
    with pytest.raises(LabelRejected, match="unrelated to the evidence"):
        check.check_description("Visitors contact a famous rock band for concert tickets.")


# ------------------------------------------------------------------------------------------ naming path


class Scripted:
    def __init__(self, replies: list[dict]) -> None:
        self.replies, self.prompts = replies, []

    def identity(self) -> str:
        return "scripted:v1"

    def chat(self, messages: list[dict[str, Any]], json_schema: Any, max_tokens: int, *, seed: int | None = None
             ) -> str:
        self.prompts.append(messages)
        return json.dumps(self.replies[min(len(self.prompts) - 1, len(self.replies) - 1)])


def fraud_evidence():
    def s(sid: str, urls: list[str], q: str) -> Session:
        return Session(f"{sid}@1", sid, tuple(Event(anonymous_id=sid, ts=1_790_000_000_000 + i, event_type="page_view",
                                                    url=u, query=q if i == 0 else None) for i, u in enumerate(urls)))
    fraud = [s(f"F{i}", ["/login", "/security/fraud", "/support/contact"], "report stolen card") for i in range(20)]
    other = [s(f"O{i}", ["/login", "/mortgage/rates", "/"], "refinance rates") for i in range(40)]
    return cluster_evidence(fraud, SiteStats.of([*fraud, *other]))


def run(replies: list[dict]):
    ev = fraud_evidence()
    backend = Scripted(replies)
    client = LLMClient(LLMConfig(backend="scripted", cache_dir=None, max_retries=2), backend=backend)
    label, record = name_cluster(ev, client, LabelValidator(ev.vocabulary, ev.text(), NAME_SYSTEM), 3)
    return ev, label, record, backend


def test_a_valid_first_reply_is_accepted_and_marked_llm() -> None:
    _, label, record, backend = run([{"name": "security_fraud", "goal": "help with a stolen card"}])
    assert label.source == "llm" and record.attempts == 1 and label.name == "security_fraud"
    assert label.description == "Visitors are looking for help with a stolen card."
    assert "security_fraud" in backend.prompts[0][-1]["content"] and len(backend.prompts) == 1
    assert shares_word(label.name.split("_"), evidence_words(label.pages, label.searches, label.events))


def test_a_rejected_reply_is_retried_with_the_reason() -> None:
    _, label, record, backend = run([{"name": "security_fraud", "goal": "boston is a city with history"},
                                     {"name": "security_fraud", "goal": "report a stolen card"}])
    assert label.source == "llm" and record.attempts == 2
    assert "mentions none of the evidence" in backend.prompts[1][-1]["content"]


def test_after_the_retries_the_label_is_built_from_the_evidence() -> None:
    ev, label, record, backend = run([{"name": "security_fraud", "goal": "short snake case name for a goal"}])
    assert len(backend.prompts) == 3 and record.source == "evidence" == label.source and record.attempts == 3
    assert label == evidence_label(ev, record.candidates)
    validator = LabelValidator(ev.vocabulary, "", NAME_SYSTEM)
    validator.check(label.name, label.description)  # the fallback passes the same checks


def test_describe_trims_a_phrase_cut_at_the_length_bound() -> None:
    assert describe("mortgage refinance rates and the") == "Visitors are looking for mortgage refinance rates."
    assert describe("car loan rate, ") == "Visitors are looking for car loan rate."
    assert describe("total-checking") == "Visitors are looking for total checking."
