"""`intent report`'s page in a real browser: Debian's chromium, headless, loads it without a console message,
decodes every inline plot and shows every label of the head (with the taxonomy's descriptions, as text)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from training.analytics import ReportConfig, write_report
from training.taxonomy.distill import IntentHead
from training.taxonomy.taxonomy import Label, Taxonomy

pytestmark = pytest.mark.slow  # building the page (about 8 s on 2 cores) plus two browser runs
ROOT = Path(__file__).resolve().parents[2]
TRICKY = "Compares <b>cards</b> & \"rates\" </p><script>alert(1)</script>"

# installed into a copy of the page only: the page itself has no script. Errors (a script error, an image that
# fails to load) are caught from the first element on; after the load event every <img> must have decoded.
CATCH = ("<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push("
         "String(e.message||(e.target&&e.target.tagName)||'error'))},true);</script>")
MARKER = ("<script>window.addEventListener('load',function(){var imgs=Array.from(document.images);"
          "var m=document.createElement('pre');m.id='load-marker';m.textContent=JSON.stringify({images:imgs.length,"
          "decoded:imgs.filter(function(i){return i.complete&&i.naturalWidth>0&&i.naturalHeight>0}).length,"
          "errors:window.__errors});document.body.appendChild(m);});</script>")


def _chromium() -> str:
    """The chromium binary; installed with the project's own `make chromium` when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        done = subprocess.run(["make", "-s", "chromium"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        why = (done.stderr or done.stdout).strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = str(exc)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip(f"chromium is not installed and `make chromium` (apt-get install chromium) could not install "
                    f"it: {why or 'no reason given'}")
    return found


def _render(browser: str, page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after the load event, browser log on stderr)."""
    done = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


class _Text(HTMLParser):
    """Text of every h2, of every element with class 'desc', and of the load marker."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.desc: list[str] = []
        self.marker = ""
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        kind = ("h2" if tag == "h2" else "desc" if "desc" in (attrs.get("class") or "").split()
                else "marker" if attrs.get("id") == "load-marker" else "")
        if kind == "h2":
            self.h2.append("")
        elif kind == "desc":
            self.desc.append("")
        self._stack.append(kind)

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        kind = next((k for k in reversed(self._stack) if k), "")
        if kind == "h2":
            self.h2[-1] += data
        elif kind == "desc":
            self.desc[-1] += data
        elif kind == "marker":
            self.marker += data


def _parse(dom: str) -> _Text:
    parser = _Text()
    parser.feed(dom)
    return parser


@pytest.fixture(scope="module")
def browser() -> str:
    """Resolved before the page is built, so a machine without chromium skips at once."""
    return _chromium()


@pytest.fixture(scope="module")
def page(small_data: Path, small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """The page on the small bank (with conversions and identity links) and artifacts whose taxonomy.yaml
    describes every label, one description full of markup."""
    artifacts = tmp_path_factory.mktemp("report_artifacts")
    for name in ("featurizer.json", "encoder.pt", "intent_head.json"):
        shutil.copy(small_artifacts / name, artifacts / name)
    head = IntentHead.load(artifacts / "intent_head.json")
    labels = [Label(name, TRICKY if i == 0 else f"Sessions about {name.replace('_', ' ')}.")
              for i, name in enumerate(head.labels)]
    Taxonomy(tuple(labels), "pinned").save(artifacts / "taxonomy.yaml")
    out = tmp_path_factory.mktemp("report") / "intents.html"
    report = write_report(small_data, artifacts, out, ReportConfig(), progress=False)
    return report, out


def test_page_loads_in_chromium_without_console_messages_and_shows_every_label(browser, page, tmp_path):
    report, out = page
    dom, log = _render(browser, out, tmp_path / "profile")
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console
    text = _parse(dom)
    names = [s.name for s in report.labels]
    assert text.h2 == ["Summary", *names]  # one section per label, in the head's order
    assert TRICKY in text.desc  # shown as text, not markup
    assert "<script>alert" not in dom and "alert(1)" in dom
    assert not report.conversions_note and report.linked_sessions > 0
    assert "Conversion by product" in dom
    assert out.stat().st_size < 2_000_000


def test_every_inline_plot_decodes_and_nothing_errors(browser, page, tmp_path):
    report, out = page
    instrumented = tmp_path / "instrumented.html"
    source = out.read_text()
    assert "<script" not in source  # the page runs no script of its own
    instrumented.write_text(source.replace("<head>", "<head>" + CATCH, 1).replace("</body>", MARKER + "</body>", 1))
    dom, log = _render(browser, instrumented, tmp_path / "profile")
    marker = json.loads(_parse(dom).marker)
    expected = 1 + sum(1 for s in report.labels if s.sessions)  # the overview plus one per labelled section
    assert marker == {"images": expected, "decoded": expected, "errors": []}
    assert not [line for line in log.splitlines() if ":CONSOLE" in line]
