"""The demo in a real browser: Debian's Chromium, headless, driven by Playwright, against a demo subprocess.

Playwright never downloads a browser here: the system binary /usr/bin/chromium (or $MMR_CHROMIUM) is used.
Screenshots of failures go to $MMR_SCREENSHOT_DIR (default: a pytest tmp folder); their paths are printed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.browser

# In CI (CI=true) a missing browser stack is a failure, never a silent skip.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
if _IN_CI:
    import gradio  # noqa: F401
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("gradio")

from mmretrieve.demo import free_port  # noqa: E402

CHROMIUM = os.environ.get("MMR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_TIMEOUT = float(os.environ.get("MMR_DEMO_START_TIMEOUT", "180"))
STEP_TIMEOUT = 30_000  # ms, for one search round trip


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> str:
    folder = os.environ.get("MMR_SCREENSHOT_DIR") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    """`python demos/app.py --index IDX --port P` on 127.0.0.1; stopped by its PID."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "demo.log"
    log = open(log_path, "w")
    # one torch thread: a tiny model needs no more, and it keeps a busy CI machine responsive
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "demos", "app.py"), "--index", demo_index.index, "--port", str(port), "--max-file-size", "5mb"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(tmp_path_factory.mktemp("cwd")),
    )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo exited with {proc.returncode}:\n{open(log_path).read()}")
            try:
                with urllib.request.urlopen(base, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer on {base} within {START_TIMEOUT:.0f} s:\n{open(log_path).read()}")
            time.sleep(0.5)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        (pytest.fail if _IN_CI else pytest.skip)(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MMR_CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000}
        )
        context.set_default_timeout(STEP_TIMEOUT)
        yield context
        context.close()


@pytest.fixture
def page(browser_context, server, screens, request):
    page = browser_context.new_page()
    page.goto(server)
    page.wait_for_selector("#text-image-query textarea")
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        path = os.path.join(screens, f"FAILED-{request.node.name}.png")
        page.screenshot(path=path, full_page=True)
        print(f"\nscreenshot of the failure: {path}")
    page.close()


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_status(page, tab: str, needle: str = "result(s)") -> str:
    status = page.locator(f"#{tab}-status")
    status.filter(has_text=needle).wait_for()
    return status.inner_text()


def _ranked_paths(page, tab: str) -> list[str]:
    return page.locator(f"#{tab}-hits tr.mmr-hit").evaluate_all("rows => rows.map(r => r.dataset.path)")


def _upload(page, tab: str, path: str) -> None:
    """Choose a file and wait until the server has it (not just until its name shows)."""
    with page.expect_response(lambda r: "/upload" in r.url and r.request.method == "POST") as done:
        page.locator(f"#{tab}-upload input[type=file]").set_input_files(path)
    assert done.value.ok, f"upload of {path} failed: HTTP {done.value.status}"
    # Gradio shows the stem and the extension in separate elements
    page.locator(f"#{tab}-upload").filter(has_text=os.path.splitext(os.path.basename(path))[0]).wait_for()


def _set_slider(page, elem_id: str, value: str) -> None:
    number = page.locator(f"#{elem_id} input[type=number]")
    number.fill(value)
    number.press("Enter")
    playwright_api.expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(value)


def test_text_to_image_gallery(page, demo_retriever, demo_index, screens):
    query = "a small red circle on the left"
    page.locator("#text-image-query textarea").fill(query)
    page.locator("#text-image-search").click()
    status = _wait_status(page, "text-image")
    assert "6 result(s)" in status and " ms" in status
    expected = [h.path for h in demo_retriever.search(query, modality="image", k=10)]
    assert _ranked_paths(page, "text-image") == expected
    gallery = page.locator("#text-image-gallery img")
    gallery.first.wait_for()
    assert gallery.count() == len(demo_index.images)
    page.wait_for_function(  # every thumbnail actually loaded from the server
        "() => [...document.querySelectorAll('#text-image-gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert "#1 · " in page.locator("#text-image-gallery").inner_text()
    shot = os.path.join(screens, "text-image-results.png")
    page.screenshot(path=shot, full_page=True)
    print(f"\nscreenshot: {shot}")


def test_text_to_video_players_start_at_the_window(page, demo_index):
    _open_tab(page, "Text → video")
    page.locator("#text-video-query textarea").fill("a red square moving right")
    page.locator("#text-video-search").click()
    _wait_status(page, "text-video")
    cards = page.locator("#text-video-videos figure.mmr-card")
    assert cards.count() == len(demo_index.videos) + 2  # the long clip gives two windows
    late = page.locator('#text-video-videos figure[data-start="10.0"]')
    assert late.count() == 1 and late.get_attribute("data-path") == demo_index.long_video
    assert "window 10.0–12.0 s" in late.inner_text()
    video = late.locator("video")
    assert video.get_attribute("src").endswith("long%20clip.mp4#t=10,12")
    video.evaluate("v => new Promise(ok => v.readyState >= 1 ? ok() : v.addEventListener('loadedmetadata', ok, {once: true}))")
    assert video.evaluate("v => v.currentTime") == pytest.approx(10.0, abs=0.3)
    assert video.evaluate("v => v.duration") == pytest.approx(12.0, abs=0.5)


def test_text_to_audio_players_with_timestamps(page, demo_index):
    _open_tab(page, "Text → audio")
    page.locator("#text-audio-query textarea").fill("a low steady tone")
    page.locator("#text-audio-query textarea").press("Enter")
    _wait_status(page, "text-audio")
    assert page.locator("#text-audio-audios audio").count() == len(demo_index.sounds) + 2
    late = page.locator('#text-audio-audios figure[data-start="10.0"]')
    assert late.get_attribute("data-path") == demo_index.long_sound
    assert "window 10.0–12.0 s" in late.inner_text()
    audio = late.locator("audio")
    audio.evaluate("a => new Promise(ok => a.readyState >= 1 ? ok() : a.addEventListener('loadedmetadata', ok, {once: true}))")
    assert audio.evaluate("a => a.currentTime") == pytest.approx(10.0, abs=0.3)


def test_search_by_uploaded_image_returns_it_first(page, demo_index, tmp_path):
    upload = tmp_path / "query.png"
    shutil.copy(demo_index.images[2], upload)
    _open_tab(page, "Search by example")
    _upload(page, "example", str(upload))
    page.locator("#example-search").click()
    _wait_status(page, "example")
    first = page.locator("#example-hits tr.mmr-hit").first
    assert first.get_attribute("data-path") == demo_index.images[2]
    assert "1.000" in first.inner_text()
    assert page.locator("#example-gallery img").count() >= 1


def test_bad_upload_shows_a_message_not_a_traceback(page, corrupt_png):
    _open_tab(page, "Search by example")
    _upload(page, "example", corrupt_png)
    page.locator("#example-search").click()
    status = _wait_status(page, "example", "broken.png")
    assert "⚠️" in status
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body
    assert page.locator("#example-hits tr.mmr-hit").count() == 0


def test_composed_tab(page, demo_index, tmp_path):
    ref = tmp_path / "reference.png"
    shutil.copy(demo_index.images[4], ref)
    _open_tab(page, "Composed")
    _upload(page, "composed", str(ref))
    page.locator("#composed-text textarea").fill("in blue")
    _set_slider(page, "composed-weight", "0")
    page.locator("#composed-search").click()
    status = _wait_status(page, "composed", "text weight 0.00")
    assert "result(s)" in status
    assert page.locator("#composed-hits tr.mmr-hit").first.get_attribute("data-path") == demo_index.images[4]
    _set_slider(page, "composed-weight", "0.8")
    page.locator("#composed-search").click()
    _wait_status(page, "composed", "text weight 0.80")
    assert page.locator("#composed-hits tr.mmr-hit").count() >= 1


def test_index_facts_and_file_route(page, server):
    stats = page.locator("#mmr-stats").inner_text()
    assert "6 image" in stats and "4 video" in stats and "4 audio" in stats and "tiny-random" in stats
    _open_tab(page, "Index")
    assert "tiny-random" in page.locator("#index-stats").inner_text()
    assert page.request.get(server + "gradio_api/file=/etc/passwd").status == 403
