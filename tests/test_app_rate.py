"""The Rate page in a real headless Chromium against `python -m app` in its own process: a rater
rates five pairs blind, the app is killed (SIGKILL) and restarted without losing a rating or
showing a rated pair again, and a page of another origin cannot post a rating."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evals import human
from tests.helpers import REPO, chromium, store_grid, write_grid
from tests.test_app import second_origin  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rate")
    grid_file = write_grid(root / "h.yaml", name="h", grid={"model.n_embd": [8, 16, 24]}, seeds=(0, 1))
    store_grid(root / "results", grid_file)
    return root / "results"


class AppProcess:
    """`python -m app` on a free port, in a process of its own that a test can SIGKILL."""

    def __init__(self, results: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "--results-dir", str(results), "--port", "0"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        line = self.proc.stdout.readline()
        assert "serving" in line, line + self.proc.stdout.read()
        self.url = line.strip().rsplit(" on ", 1)[1].rstrip("/")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def rate_one(page, choice: str) -> str:
    """Pick `choice` on every dimension, save, and return the pair that was rated."""
    pair = page.get_attribute("#pair", "data-pair")
    for dim in human.DIMENSIONS:
        page.check(f"#choices input[name='{dim}'][value='{choice}']")
    page.click("#submit")
    page.wait_for_function("(old) => document.querySelector('#pair').dataset.pair !== old", arg=pair)
    return pair


def test_rate_five_pairs_blind_then_kill_and_restart_loses_nothing(browser, results):
    cells = sorted(p.name for p in (results / "h").iterdir() if (p / "DONE").exists())
    app = AppProcess(results)
    page = browser.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{app.url}/rate#rater=alice&grid=h")
        page.wait_for_selector("#pair:not([hidden])")
        total = int(page.inner_text("#progress").split(" of ")[1].split()[0])
        assert total == 24  # 12 pairs of cells of different configurations x 2 prompts
        shown = []
        for i, choice in enumerate(["left", "right", "tie", "left", "right"]):
            text = page.inner_text("body")
            assert not any(c in text for c in cells)  # blind: no cell name on the page
            shown.append(rate_one(page, choice))
            page.wait_for_selector(f"#progress:has-text('{i + 1} of {total}')")
        assert len(set(shown)) == 5
        assert [r["pair"] for r in human.read_ratings(human.ratings_path(results / "h", "alice"))] == shown
        next_before = page.get_attribute("#pair", "data-pair")
    finally:
        app.kill()
    assert [r["pair"] for r in human.read_ratings(human.ratings_path(results / "h", "alice"))] == shown

    app = AppProcess(results)
    try:
        page.goto(f"{app.url}/rate#rater=alice&grid=h")
        page.wait_for_selector(f"#progress:has-text('5 of {total}')")
        assert page.get_attribute("#pair", "data-pair") == next_before  # seeded per rater: the same order
        for _ in range(3):
            assert rate_one(page, "tie") not in shown  # a rated pair never comes back
        rows = human.read_ratings(human.ratings_path(results / "h", "alice"))
        assert [r["pair"] for r in rows[:5]] == shown and len(rows) == 8
        assert rows[0]["choices"] == dict.fromkeys(human.DIMENSIONS, "left")
        assert {rows[0]["left"]["cell"], rows[0]["right"]["cell"]} <= set(cells)
        assert {r["left"]["cell"] < r["right"]["cell"] for r in rows} == {True, False}  # the sides are shuffled
        bob = json.loads(urllib.request.urlopen(f"{app.url}/api/rate/h?rater=bob", timeout=30).read())
        assert bob["rated"] == 0 and bob["pair"] != shown[0]  # another rater, another order
        again = {"rater": "alice", "pair": shown[0], "choices": dict.fromkeys(human.DIMENSIONS, "tie")}
        req = urllib.request.Request(f"{app.url}/api/rate/h", data=json.dumps(again).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 409 and "already rated" in json.loads(err.value.read())["error"]
    finally:
        app.kill()
    assert not errors, errors


ATTACK = """<!doctype html><html><body>
<form id="form" method="POST" action="{app}/api/rate/h" enctype="text/plain" target="sink">
  <input name='{{"rater": "mallory", "pair": "{pair}", "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
  fetch("{app}/api/rate/h", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
        body: JSON.stringify({{rater: "mallory", pair: "{pair}", choices: {{}}}})}}).finally(() => {{
    document.getElementById("form").submit();
    document.title = "sent";
  }});
</script></body></html>"""


def test_a_cross_site_rating_is_refused(browser, results, second_origin):  # noqa: F811 - the fixture
    folder, origin = second_origin
    app = AppProcess(results)
    try:
        pair = json.loads(urllib.request.urlopen(f"{app.url}/api/rate/h?rater=mallory", timeout=30).read())["pair"]
        (folder / "attack.html").write_text(ATTACK.format(app=app.url, pair=pair))
        page = browser.new_page()
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status) if "/api/rate" in r.url else None)
        page.goto(f"{origin}/attack.html")
        page.wait_for_function("document.title === 'sent'")
        page.wait_for_timeout(1000)
        assert answers == [403, 403], answers
        body = json.dumps({"rater": "mallory", "pair": pair, "choices": dict.fromkeys(human.DIMENSIONS, "tie")})
        req = urllib.request.Request(f"{app.url}/api/rate/h", data=body.encode(),
                                     headers={"Content-Type": "application/json", "Origin": "http://evil.example"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403
    finally:
        app.kill()
    assert not human.ratings_path(results / "h", "mallory").exists()


def test_bad_ratings_get_one_line_errors(results):
    from app.server import Server

    srv = Server(results, port=0, cache_size=1).start()
    url = f"http://127.0.0.1:{srv.port}"

    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        pair = call("/api/rate/h?rater=carol")[1]["pair"]
        ties = dict.fromkeys(human.DIMENSIONS, "tie")
        cases = [
            ("/api/rate/h?rater=../x", None, 400, "rater '../x'"),
            ("/api/rate/nope?rater=carol", None, 404, "grid 'nope' not found"),
            ("/api/rate/h", {"rater": "carol", "pair": pair, "choices": {"grammar": "left"}}, 400, "for each of"),
            ("/api/rate/h", {"rater": "carol", "pair": pair, "choices": {**ties, "plot": "both"}}, 400, "pick one"),
            ("/api/rate/h", {"rater": "carol", "pair": "0" * 20, "choices": ties}, 404, "is not a pair"),
            ("/api/rate/h", {"rater": "carol", "pair": pair, "choices": ties, "note": "x" * 2001}, 400, "note"),
        ]
        for path, body, code, message in cases:
            status, answer = call(path, body)
            assert status == code and message in answer["error"] and "\n" not in answer["error"], (path, answer)
        assert not human.ratings_path(results / "h", "carol").exists()
    finally:
        srv.stop()
