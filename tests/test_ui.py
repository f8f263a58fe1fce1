"""`flashi2v ui`: the upload checks, the model's defaults on the page, and the whole page end to end in headless
Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download). Set FLASHI2V_UI_SCREENSHOTS=DIR
to also save the page's screenshots there (docs/ui.md's were made so)."""

import os
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="the UI needs gradio: pip install 'flashi2v[ui]'")

from flashi2v.errors import FlashI2VError  # noqa: E402
from flashi2v.video import read_video_frames  # noqa: E402

CHROMIUM = os.environ.get("FLASHI2V_CHROMIUM", "/usr/bin/chromium")
# Flags that start Chromium on a closed network as root: no sandbox, no GPU, no background fetches.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = os.environ.get("FLASHI2V_UI_SCREENSHOTS")
# Tiny: two real denoising steps on the built-in model, a few seconds on a CPU. For the docs' screenshots the
# built-in model's own settings (builtin_model/pipeline.json), so the pictured video is a real result.
FRAMES, STEPS = (17, 12) if SCREENSHOTS else (5, 2)


def photo(path: Path, size=(96, 80)) -> Path:
    """A real-looking photo: a colour gradient with a bright square."""
    x = torch.linspace(0, 255, size[0]).to(torch.uint8)
    pixels = torch.stack([x.expand(size[1], -1), x.flip(0).expand(size[1], -1),
                          torch.full((size[1], size[0]), 90, dtype=torch.uint8)], dim=-1).clone()
    pixels[20:40, 30:50] = 250
    Image.fromarray(pixels.numpy()).save(path)
    return path


# ---- upload checks (no browser) ----------------------------------------------------------------------------

def test_read_upload_accepts_a_photo_and_refuses_text_oversized_and_missing(tmp_path):
    from flashi2v.ui import read_upload

    image = read_upload(str(photo(tmp_path / "p.png")))
    assert image.size == (96, 80) and image.mode == "RGB"
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    with pytest.raises(FlashI2VError, match="'notes.txt' is not an image"):
        read_upload(str(text))
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 2**20 + 1))
    with pytest.raises(FlashI2VError, match="over the 2 MB limit"):
        read_upload(str(big), max_mb=2)
    with pytest.raises(FlashI2VError, match="no image"):
        read_upload(None)


def test_page_defaults_come_from_the_loaded_model():
    from flashi2v.random_components import random_tiny_pipeline
    from flashi2v.ui import build_app, model_settings

    pipe = random_tiny_pipeline(seed=0)
    pipe.defaults = {"guidance": 1.25, "steps": 7, "num_frames": 9, "cutoff": 0.3, "solver": "heun"}
    settings = model_settings(pipe)
    assert (settings["guidance"], settings["steps"], settings["num_frames"]) == (1.25, 7, 9)
    app = build_app(pipe, examples=[])
    values = {c.elem_id: c.value for c in app.blocks.values() if getattr(c, "elem_id", None)}
    assert values["guidance"] == 1.25 and values["steps"] == 7 and values["frames"] == 9
    assert values["cutoff"] == 0.3 and values["solver"] == "heun"
    generate = next(f for f in app.fns.values() if f.name == "generate")
    assert generate.concurrency_limit == 1  # one generation at a time; the queue holds the rest


def test_out_of_range_settings_get_the_pipelines_message(tmp_path):
    """The page adds no checks of its own: what the sliders cannot stop (a request to the server) is refused
    with the pipeline's line, shown as the page's error."""
    from flashi2v.random_components import random_tiny_pipeline
    from flashi2v.ui import build_app

    app = build_app(random_tiny_pipeline(seed=0), output_dir=tmp_path, examples=[])
    generate = next(f.fn for f in app.fns.values() if f.name == "generate")
    image = str(photo(tmp_path / "p.png"))
    settings = dict(prompt="the camera pans left", negative_prompt="", seed=0, frames=5, steps=1, guidance=1.0,
                    cutoff=0.1, solver="euler", history=[])
    with pytest.raises(gr.Error, match="num_frames 6 is not of the form 4k\\+1 for this model: use e.g. 5"):
        generate(image, **{**settings, "frames": 6})
    with pytest.raises(gr.Error, match="cutoff 1.5 is out of range"):
        generate(image, **{**settings, "cutoff": 1.5})
    with pytest.raises(gr.Error, match="seed -1 is out of range: use 0..2147483647"):
        generate(image, **{**settings, "seed": -1})
    assert not list(tmp_path.glob("*.mp4"))  # nothing was generated


# ---- the page in a browser ---------------------------------------------------------------------------------

def _browser_or_skip():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FLASHI2V_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (the Python package) is not installed: pip install 'flashi2v[test]'")
    return sync_playwright


LOCAL = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app on the built-in model, served on 127.0.0.1; yields (url, every address the server process
    looked up or connected to while it ran)."""
    _browser_or_skip()
    from flashi2v.pipeline import FlashI2VPipeline
    from flashi2v.ui import build_app, serve

    contacted = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def watched_connect(sock, address):
        contacted.append(address[0] if isinstance(address, tuple) else address)
        return connect(sock, address)

    def watched_getaddrinfo(host, *args, **kwargs):
        contacted.append(host)
        return getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", watched_connect)
        mp.setattr(socket, "getaddrinfo", watched_getaddrinfo)
        pipe = FlashI2VPipeline.from_pretrained("builtin")
        app = build_app(pipe, output_dir=tmp_path_factory.mktemp("videos"))
        url = serve(app, port=None, block=False)
        try:
            yield url, contacted
        finally:
            app.close()


@pytest.fixture(scope="module")
def page(app_url):
    """The page in headless Chromium; ``page.requests`` lists every URL the browser asked for."""
    sync_playwright = _browser_or_skip()
    url, _ = app_url
    with sync_playwright() as pw:
        # Playwright gives each launch a fresh temporary profile (its own --user-data-dir).
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.requests = []
        page.on("request", lambda request: page.requests.append(request.url))
        page.goto(url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def _screenshot(page, name: str) -> None:
    if SCREENSHOTS:
        import io

        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        shot.quantize(256).save(Path(SCREENSHOTS) / name, optimize=True)  # 256 colours: a third of the bytes


def test_text_upload_shows_the_error(page, tmp_path):
    # A .txt is refused in the page by the upload box (it takes images only) ...
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    page.set_input_files("#photo input[type=file]", str(text))
    page.get_by_text("Invalid file type: notes.txt").first.wait_for(timeout=30_000)
    # ... and text named like a photo gets past it, to the server's check, which says what is wrong.
    fake = tmp_path / "holiday.png"
    fake.write_text("not a photo either\n")
    page.set_input_files("#photo input[type=file]", str(fake))
    page.get_by_text("'holiday.png' is not an image").first.wait_for(timeout=30_000)
    assert page.locator("#preview img").count() == 0  # nothing was taken for a photo
    _screenshot(page, "ui_error.png")


def _photo_to_upload(tmp_path) -> Path:
    """The README's demo photo when scikit-image (the test extra) has it, else a drawn one."""
    from flashi2v.photos import bundled_photo_files

    return bundled_photo_files().get("astronaut") or photo(tmp_path / "photo.png")


# Collects every "k/N" step count the page shows while it generates (they can pass faster than a poll).
WATCH_PROGRESS = """() => {
    window.stepCounts = new Set();
    new MutationObserver(() => {
        for (const m of document.body.textContent.matchAll(/(\\d+)\\/(\\d+) steps?/g)) window.stepCounts.add(m[0]);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _generate(page) -> None:
    page.evaluate(WATCH_PROGRESS)
    page.click("#generate")
    page.get_by_text(f"/{STEPS} step").first.wait_for(timeout=120_000)


def test_upload_generate_play_and_compare(page, tmp_path):
    page.reload()
    page.wait_for_selector("#generate")
    page.set_input_files("#photo input[type=file]", str(_photo_to_upload(tmp_path)))
    page.wait_for_selector("#preview img")
    page.fill("#prompt textarea", "the camera pans left")
    for slider, value in (("#frames", FRAMES), ("#steps", STEPS)):
        page.fill(f"{slider} input[type=number]", str(value))
        page.press(f"{slider} input[type=number]", "Enter")
    _generate(page)
    _screenshot(page, "ui_progress.png")
    video = page.wait_for_selector("#result video", timeout=120_000)
    page.wait_for_function("v => v.readyState >= 2 && v.duration > 0", arg=video, timeout=30_000)
    assert page.evaluate("v => v.error", video) is None
    assert page.evaluate("v => v.duration", video) == pytest.approx(FRAMES / 16, abs=1 / 16)
    # Download what the page plays and count its frames.
    src = page.evaluate("v => v.currentSrc", video)
    mp4 = tmp_path / "downloaded.mp4"
    mp4.write_bytes(page.request.get(src).body())
    frames, fps = read_video_frames(mp4)
    assert frames.shape[:3] == (FRAMES, 128, 128) and fps == 16
    page.get_by_text(f"seed 0 · {FRAMES} frames · {STEPS} steps").first.wait_for()
    # The progress bar counted the pipeline's denoising steps (its tqdm bar): a real count, not a spinner.
    assert f"1/{STEPS} step" in page.evaluate("() => [...window.stepCounts]")

    # A second take with a random seed: the first moves to "earlier results", with its settings, beside it.
    page.click("#random-seed")
    page.wait_for_function("() => document.querySelector('#seed input').value !== '0'")
    seed = page.input_value("#seed input")
    _generate(page)
    page.get_by_text(f"seed {seed} · {FRAMES} frames").first.wait_for(timeout=120_000)
    earlier = page.wait_for_selector("#earlier-0 video", timeout=30_000)
    assert page.evaluate("v => v.currentSrc", earlier) == src
    assert f"seed 0 · {FRAMES} frames" in page.inner_text("#earlier-settings-0")
    assert page.locator("#earlier-1 video").count() == 0  # only one earlier result so far
    page.wait_for_function("v => v.readyState >= 2", arg=page.query_selector("#result video"), timeout=30_000)
    _screenshot(page, "ui_result.png")


def test_an_example_photo_fills_photo_and_prompt(page):
    from flashi2v.ui import example_photos

    if not example_photos():
        pytest.skip("no example photos: they come from scikit-image (pip install 'flashi2v[ui]')")
    page.reload()
    page.wait_for_selector("#generate")
    page.get_by_text("the camera zooms in slowly").first.click()
    page.wait_for_selector("#preview img", timeout=30_000)
    assert page.input_value("#prompt textarea") == "the camera zooms in slowly"
    assert "coffee" in page.inner_text("#photo")


def test_nothing_leaves_the_machine(app_url, page):
    """No analytics, version check, web fonts or CDN: the server and the page only talk to 127.0.0.1."""
    url, contacted = app_url
    page.reload()
    page.wait_for_selector("#generate")
    assert page.requests and all(u.startswith(url) or u.startswith(("data:", "blob:")) for u in page.requests), \
        sorted({u for u in page.requests if not u.startswith(url)})
    assert "127.0.0.1" in contacted  # the watch works: Gradio checks its own URL once it has started
    assert all(str(host) in LOCAL or str(host).startswith("/") for host in contacted), contacted


def test_cli_refuses_a_busy_port_and_warns_about_other_hosts(capsys):
    from flashi2v.cli import main

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "warning" not in err  # the default host: no warning
        assert main(["ui", "--host", "0.0.0.0", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert "warning: --host 0.0.0.0" in err and f"cannot listen on 0.0.0.0:{port}" in err
