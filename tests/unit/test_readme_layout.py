"""The README's layout section is generated from the tree (scripts/layout.py) and must match it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_layout_matches_the_tree():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "layout.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_every_package_and_module_says_what_it_is_for():
    sys.path.insert(0, str(ROOT / "scripts"))
    import layout

    missing = [f"{pkg}/{name}" for pkg in layout.PACKAGES for _, name, text in layout.entries(ROOT / pkg) if not text]
    missing += [f"{pkg}/__init__.py" for pkg in layout.PACKAGES if not layout.summary(ROOT / pkg / "__init__.py")]
    assert not missing, f"modules without a docstring (the layout has nothing to say about them): {missing}"
