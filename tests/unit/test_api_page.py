"""The status page's HTML (pure rendering) and its vendored chart library."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from support.api import FakeDocuments

from scaling.api import page
from scaling.api.app import STATIC


def test_the_vendored_files_are_the_pinned_ones() -> None:
    table = (STATIC / "VENDORED.md").read_text()
    rows = re.findall(r"^\| (\S+) \| .* \| (1\.6\.32) \| .* \| ([0-9a-f]{64}) \|$", table, re.M)
    assert {name for name, _, _ in rows} == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, _, digest in rows:
        data = (STATIC / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    assert (
        (STATIC / "uPlot.iife.min.js")
        .read_text()
        .startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    )
    assert "MIT License" in (STATIC / "uPlot.LICENSE").read_text()


def test_the_page_loads_only_its_own_scripts() -> None:
    html = page.status_page("launch", "launch", "alice", 5, "")
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert sources == ["/static/uPlot.iife.min.js", "/static/status.js"]
    assert "http" not in "".join(sources)  # no CDN
    for source in sources:
        assert (STATIC / Path(source).name).is_file()


def test_bars_are_coloured_by_level_and_values_are_escaped() -> None:
    docs = FakeDocuments("launch", db=[17.0, 17.0, 17.0, 17.0, 17.0])
    m = docs.measured()
    status = json.loads(json.dumps(m.status))
    status["verdict"]["reasons"].append("<script>alert(1)</script>")
    events = [{"transition": "<b>t1</b>", "step": "promote-target", "event": "end", "at": 1.0}]
    html = page.live_fragment(status, {"points": [], "x": "</script><script>"}, events, True)
    assert '<div class="tier" data-tier="database" data-level="critical">' in html
    assert 'class="bar level-critical" style="width:85.0%"' in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<b>t1</b>" not in html and "&lt;b&gt;t1&lt;/b&gt;" in html
    # The history's JSON cannot close its own script element.
    assert html.count("</script>") == 1
    assert 'class="rec rec-immediate"' in html and "promote to growth" in html
    assert "A transition is running." in html


def test_without_a_recommendation_the_page_says_so() -> None:
    m = FakeDocuments("launch").measured()
    html = page.live_fragment(m.status, m.history, "no service here", False)
    assert 'id="no-recommendation"' in html
    assert "Transition log unavailable: no service here" in html
