"""Regenerate the README's layout section from the tree: each package and module with its docstring's summary.

    python scripts/layout.py          # rewrite the block between the layout markers in README.md
    python scripts/layout.py --check  # exit 1 if README.md is out of date (a unit test runs this)

The summary is a module's first docstring sentence (a package's from its __init__.py), so the layout can
only say what the code says about itself; non-Python folders get a fixed line from `FOLDERS`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- layout:start (python scripts/layout.py) -->", "<!-- layout:end -->"
PACKAGES = ("gateway", "training", "harness")
"""Python packages: the service, the offline side (with the serving core both sides share, training/core/),
the harnesses."""
FOLDERS = {
    "proto/": "the gRPC contract (intent/gateway/v1/gateway.proto; stubs generated into gateway/_gen)",
    "model_repository/": "the Triton repository `make export` writes (configs tracked, model files ignored)",
    "deploy/": "deploy/helm: the Helm chart (docs/deploy.md); deploy/docker: the gateway image",
    "docs/": "architecture map, data, encoder, serving and deployment notes",
    "scripts/": "one-off tools (GPU check, this layout)",
    "tests/": "unit/ (no servers: make test-unit), integration/ (real Triton, Redis, gateway, LLM), chart/",
    "reports/": "measured outputs of the benchmarks and evaluations, with the machine they ran on",
}
WIDTH = 120


def summary(path: Path) -> str:
    """The first sentence of a module's docstring, on one line ('' when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    for stop in (". ", ".\n"):
        if stop in first:
            first = first.split(stop)[0] + "."
            break
    return first


def entries(package: Path, depth: int = 1) -> list[tuple[int, str, str]]:
    """(depth, name, summary) for a package's modules and subpackages, sorted, private ones and _gen left out."""
    out = []
    for child in sorted(package.iterdir()):
        if child.name.startswith(("_", ".")):
            continue
        if child.is_dir() and (child / "__init__.py").exists():
            out.append((depth, child.name + "/", summary(child / "__init__.py")))
            out += entries(child, depth + 1)
        elif child.suffix == ".py":
            out.append((depth, child.name, summary(child)))
    return out


def wrap(indent: str, name: str, text: str, column: int) -> list[str]:
    """`name` then `text` from `column`, wrapped at WIDTH with continuation lines aligned under the text."""
    lines, line = [], f"{indent}{name}".ljust(column - 1) + " "
    for word in text.split():
        if len(line) + len(word) > WIDTH and line.strip() != name:
            lines.append(line.rstrip())
            line = " " * column
        line += word + " "
    lines.append(line.rstrip())
    return lines


def layout(root: Path = ROOT) -> str:
    column = 28
    lines: list[str] = []
    for name in PACKAGES:
        lines += wrap("", f"{name}/", summary(root / name / "__init__.py"), column)
        for depth, child, text in entries(root / name):
            lines += wrap("  " * depth, child, text, column)
    for folder, text in FOLDERS.items():
        lines += wrap("", folder, text, column)
    return "\n".join("    " + line if line else "" for line in lines)


def rewrite(readme: str, block: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no layout markers ({START} ... {END})")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n\n{block}\n\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/layout.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md's layout is out of date")
    args = parser.parse_args(argv)
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    updated = rewrite(readme, layout())
    if args.check:
        if updated != readme:
            print("README.md's layout section is out of date: run python scripts/layout.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
