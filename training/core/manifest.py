"""The model manifest: one file that pins every artifact a served answer depends on.

Why: an answer of the gateway is the product of five artifacts made at different times by different stages —
the featurizer (`make train`), the encoder weights (`make train`), the distilled intent head and its taxonomy
(`make taxonomy`) and the tile ranker (`make eval`). Versions alone do not tie them together: retraining the
encoder on the same data keeps the featurizer version, so embeddings cached under the old encoder would be
served as if nothing changed, and a ranker fitted in another encoder's embedding space would be accepted.
The manifest records, per component, the sha256 of the file's bytes and a readable version string, plus the
encoder fingerprint the ranker was fitted on (`ranker_encoder_sha256`), for the Triton repository version it
describes.

`make export` writes it at `<repository>/manifest.json` (Triton ignores a plain file at the repository root,
in model control modes `none` and `explicit`: measured on Triton 2.51) and puts its `manifest_hash` into the
ensemble's config, so the three parties can check each other:
  * the gateway refuses to start (and to reload) when its featurizer.json / ranker.json do not hash to the
    manifest's values, and refuses a Triton ensemble whose `manifest_hash` parameter is another one;
  * cache keys and cache entry headers carry `manifest_hash`, so a new model set never reads an old set's
    embeddings;
  * every answer reports `model_version` (`m<repository version>-<12 hex of the hash>`): which set answered.

`manifest_hash` is a hash of the canonical JSON of the content (not of the file's formatting), so it is the
same wherever and whenever it is computed. Torch-free on purpose (stdlib only): the gateway imports it.

    {"format": "intent-manifest/1", "repository_version": 2, "model": "intent_pipeline", "target": "cpu",
     "components": {"featurizer": {"file": "featurizer.json", "sha256": "...", "version": "1-3205fdf02c6a"},
                    "encoder": {...}, "intent_head": {...}, "taxonomy": {...} | null, "ranker": {...} | null},
     "ranker_encoder_sha256": "..." | null, "labels": [...],
     "tensors": {"CATEGORICAL": [-1, 9], "CONTINUOUS": [-1, 6], "EMBEDDING": [64], "INTENT_PROBS": [10]},
     "manifest_hash": "...", "model_version": "m2-..."}   (the last two are derived, checked on load)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

FORMAT = "intent-manifest/1"
MANIFEST_FILE = "manifest.json"
COMPONENTS = ("featurizer", "encoder", "intent_head", "taxonomy", "ranker")
FILE_NAMES = {"featurizer": "featurizer.json", "encoder": "encoder.pt", "intent_head": "intent_head.json",
              "taxonomy": "taxonomy.yaml", "ranker": "ranker.json"}
"""The file each component is exported from (in the artifacts directory, by default)."""
OPTIONAL = ("taxonomy", "ranker")
"""Components a repository may be exported without: a head can be used without its taxonomy file, and a
repository without a ranker serves Triton (benchmarks) but no gateway will take it."""
HASH_HEX = 16
"""Length of `manifest_hash` in hex digits (64 bits: collisions are not a concern between model sets)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DERIVED = ("manifest_hash", "model_version")


class ManifestError(ValueError):
    """A manifest that cannot be read, or artifacts that disagree with it (the message says what to do)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """sha256 of a file's bytes, read in chunks (encoder checkpoints are not small)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Component:
    """One pinned artifact: the file name it was read from, the sha256 of its bytes and a readable version."""

    file: str
    sha256: str | None
    """None only for an optional component whose file was absent at export (the version still says what the
    other artifacts expected, e.g. the head's taxonomy version)."""
    version: str

    @classmethod
    def of(cls, path: Path | str, version: str) -> Component:
        return cls(Path(path).name, sha256_file(path), version)

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "version": self.version}


@dataclass(frozen=True)
class Mismatch:
    """One disagreement, named: which component (or field), what was expected and what was found."""

    component: str
    expected: str
    found: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.component}: expected {self.expected}, found {self.found}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class Manifest:
    """What one Triton repository version serves, and which gateway-side files belong to it."""

    repository_version: int
    components: Mapping[str, Component | None]
    ranker_encoder_sha256: str | None
    """The sha256 of the encoder.pt the ranker was fitted on (from ranker.json's meta); None when the export was
    told to accept a ranker without one (--allow-unpinned-ranker)."""
    labels: tuple[str, ...]
    tensors: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """The ensemble's interface (name -> dims without the batch): a new version that stays loaded beside an
    older one must keep it, since Triton shares a model's config between its versions."""
    model: str = "intent_pipeline"
    target: str = "cpu"
    format: str = FORMAT

    def __post_init__(self) -> None:
        problems = []
        if self.format != FORMAT:
            problems.append(f"format {self.format!r} is not {FORMAT!r}")
        if not isinstance(self.repository_version, int) or self.repository_version < 1:
            problems.append(f"repository_version must be an integer >= 1, got {self.repository_version!r}")
        if set(self.components) != set(COMPONENTS):
            problems.append(f"components must be exactly {list(COMPONENTS)}, got {sorted(self.components)}")
        for name, comp in self.components.items():
            if comp is None:
                if name not in OPTIONAL:
                    problems.append(f"component {name} is required")
            elif comp.sha256 is None:
                if name not in OPTIONAL:
                    problems.append(f"component {name} has no sha256")
            elif not _SHA256.match(comp.sha256):
                problems.append(f"component {name}: sha256 {comp.sha256!r} is not 64 lowercase hex digits")
        if self.ranker_encoder_sha256 is not None and not _SHA256.match(self.ranker_encoder_sha256):
            problems.append(f"ranker_encoder_sha256 {self.ranker_encoder_sha256!r} is not 64 lowercase hex digits")
        if problems:
            raise ManifestError("invalid manifest: " + "; ".join(problems))

    # -- identity ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The content (what the hash covers), in a fixed layout."""
        return {"format": self.format, "repository_version": self.repository_version, "model": self.model,
                "target": self.target,
                "components": {n: (None if (c := self.components[n]) is None else c.to_dict()) for n in COMPONENTS},
                "ranker_encoder_sha256": self.ranker_encoder_sha256, "labels": list(self.labels),
                "tensors": {k: list(v) for k, v in sorted(self.tensors.items())}}

    @cached_property
    def manifest_hash(self) -> str:
        """Short stable hash of the content: the canonical JSON (sorted keys, no whitespace) of `to_dict()`."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return sha256_bytes(canonical.encode())[:HASH_HEX]

    @property
    def model_version(self) -> str:
        """What every answer reports: the repository version and the content hash, e.g. `m2-1a2b3c4d5e6f`."""
        return f"m{self.repository_version}-{self.manifest_hash[:12]}"

    @property
    def embedding_dim(self) -> int:
        return int(self.tensors["EMBEDDING"][-1])

    def sha256(self, component: str) -> str | None:
        comp = self.components[component]
        return None if comp is None else comp.sha256

    # -- files ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping) -> Manifest:
        if not isinstance(doc, Mapping):
            raise ManifestError(f"a manifest is a JSON object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"manifest format {doc.get('format')!r} is not {FORMAT!r}")
        try:
            components = {n: None if c is None else Component(str(c["file"]), c["sha256"], str(c["version"]))
                          for n, c in doc["components"].items()}
            manifest = cls(doc["repository_version"], components, doc.get("ranker_encoder_sha256"),
                           tuple(doc["labels"]), {k: tuple(int(d) for d in v) for k, v in doc["tensors"].items()},
                           doc.get("model", "intent_pipeline"), doc.get("target", "cpu"), doc["format"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"manifest is missing or misshapes a field: {exc!r}") from None
        for name in _DERIVED:  # the derived fields are for readers; a hand edit that breaks them is refused
            recorded, actual = doc.get(name), getattr(manifest, name)
            if recorded is not None and recorded != actual:
                raise ManifestError(f"manifest records {name} {recorded!r} but its content gives {actual!r} "
                                    "(edited by hand?): export again")
        return manifest

    @classmethod
    def load(cls, path: Path | str) -> Manifest:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no model manifest at {path}: `make export` writes it beside the model "
                                    "repository (GATEWAY_MANIFEST / --manifest point elsewhere)") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not JSON: {exc}") from None
        try:
            return cls.from_dict(doc)
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from None

    def write(self, path: Path | str) -> Path:
        """Write atomically (a temporary file renamed over the old one): a reader polling the file never sees
        half of it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.to_dict(), "manifest_hash": self.manifest_hash, "model_version": self.model_version}
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # -- checks -----------------------------------------------------------------------------------------
    def check(self, files: Mapping[str, Path | str] | None = None, require: Iterable[str] = ()) -> list[Mismatch]:
        """Every disagreement between the manifest and `files` (component -> path), plus its own consistency.

        A component in `require` must be pinned by the manifest; a file that is missing, or whose sha256 is not
        the manifest's, is named with both hashes. The ranker must have been fitted on the manifest's encoder
        (unless the export recorded no fingerprint). Empty list: everything agrees.
        """
        found: list[Mismatch] = []
        for name in require:
            if self.components.get(name) is None:
                found.append(Mismatch(name, f"a pinned {FILE_NAMES.get(name, name)}", "none in the manifest",
                                      "export with it (make eval writes ranker.json, then make export)"))
        for name, path in (files or {}).items():
            if name not in COMPONENTS:
                raise KeyError(f"unknown component {name!r}; components are {COMPONENTS}")
            pinned = self.sha256(name)
            if pinned is None:
                continue  # named above if required; an unpinned optional file is not compared
            path = Path(path)
            if not path.is_file():
                found.append(Mismatch(name, f"sha256 {pinned[:12]}…", f"no file at {path}"))
                continue
            actual = sha256_file(path)
            if actual != pinned:
                found.append(Mismatch(name, f"sha256 {pinned[:12]}…", f"{actual[:12]}… in {path}"))
        encoder = self.sha256("encoder")
        if self.components.get("ranker") is not None and self.ranker_encoder_sha256 not in (None, encoder):
            found.append(Mismatch("ranker_encoder_sha256", f"the manifest's encoder {str(encoder)[:12]}…",
                                  f"a ranker fitted on encoder {self.ranker_encoder_sha256[:12]}…"))
        return found

    def require_match(self, files: Mapping[str, Path | str], require: Iterable[str] = (), where: str = "") -> None:
        """`check`, raising ManifestError that lists every mismatch and what to do about it."""
        found = self.check(files, require)
        if found:
            origin = f" {where}" if where else ""
            raise ManifestError(
                f"the files do not match the model manifest{origin} ({self.model_version}): "
                + "; ".join(map(str, found))
                + ". Deploy the featurizer.json and ranker.json that this repository version was exported with "
                "(`make export` writes the manifest from them), or point the manifest setting at theirs.")

    def check_served(self, params: Mapping[str, str]) -> list[Mismatch]:
        """Disagreements between the manifest and a served ensemble's config parameters (Triton's
        `manifest_hash` and `repository_version`, written by the export)."""
        found = []
        served = params.get("manifest_hash", "")
        if served != self.manifest_hash:
            found.append(Mismatch("manifest_hash", self.manifest_hash, served or "none (exported before manifests)"))
        version = params.get("repository_version", "")
        if version != str(self.repository_version):
            found.append(Mismatch("repository_version", str(self.repository_version), version or "none"))
        return found


def component_files(artifacts: Path | str, names: Iterable[str] = COMPONENTS) -> dict[str, Path]:
    """component -> its default file in an artifacts directory."""
    return {n: Path(artifacts) / FILE_NAMES[n] for n in names}


__all__ = ["COMPONENTS", "FILE_NAMES", "FORMAT", "MANIFEST_FILE", "Component", "Manifest", "ManifestError",
           "Mismatch", "component_files", "sha256_bytes", "sha256_file"]
