"""`flashi2v ui`: a local web page over ``FlashI2VPipeline`` (Gradio; ``pip install "flashi2v[ui]"``).

The page only collects settings, calls the pipeline and shows what it returns: every range check and all
generation logic live in the pipeline, whose ``FlashI2VError`` lines are shown as the page's error message.
One model is loaded once; generations run one at a time through Gradio's queue.
"""

from __future__ import annotations

import os

# Before gradio is imported: no usage analytics, no version check (both would reach the internet).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import dataclasses  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from .errors import FlashI2VError  # noqa: E402
from .pipeline import FPS, WAN_NEGATIVE_PROMPT, FlashI2VPipeline  # noqa: E402
from .sampling import SOLVERS  # noqa: E402
from .video import load_image  # noqa: E402

MAX_UPLOAD_MB = 20  # a photo is a few MB; anything larger is refused before it is decoded
# Where the sliders stop (further, when the model's own default lies beyond); the pipeline checks the rest.
MAX_FRAMES = 81  # Wan2.1's longest clip (5 s at 16 fps)
MAX_STEPS = 100
MAX_GUIDANCE = 20.0
HISTORY = 3  # earlier results kept side by side under the current one
SEED_MAX = 2**31 - 1
CUTOFF_INFO = ("Detail (cutoff rho): the share of the photo's low-frequency energy left out of the Fourier "
               "guidance. Lower keeps more of the photo's fine detail; higher gives the motion more freedom.")
# Prompts in the wording the built-in model was trained on (docs/builtin.md); any text works for other models.
EXAMPLE_PROMPTS = {"astronaut": "the camera pans left", "coffee": "the camera zooms in slowly",
                   "rocket": "the camera tilts up"}


def model_settings(pipe: FlashI2VPipeline) -> dict:
    """The generation settings the loaded model was made for: its pipeline.json defaults over the reference's
    (``FlashI2VPipeline.resolve_settings``, the one place that resolves them)."""
    settings = dataclasses.asdict(pipe.resolve_settings())
    settings["negative_prompt"] = pipe.defaults.get("negative_prompt", WAN_NEGATIVE_PROMPT)
    return settings


def example_photos() -> list[list[str]]:
    """[photo, prompt] rows from the real photos bundled in installed packages (scikit-image); none if absent.
    The held-out ones: the built-in model never trained on them."""
    from .photos import HELD_OUT, bundled_photo_files

    found = bundled_photo_files(include_gray=False)
    return [[str(found[name]), EXAMPLE_PROMPTS[name]] for name in HELD_OUT if name in found and name in EXAMPLE_PROMPTS]


def read_upload(path: str | None, max_mb: float = MAX_UPLOAD_MB) -> Image.Image:
    """The uploaded file as an RGB image, or one FlashI2VError line saying what is wrong with it."""
    if not path:
        raise FlashI2VError("no image: upload a photo (PNG, JPEG, WebP, ...) or click one of the examples")
    size = Path(path).stat().st_size
    if size > max_mb * 2**20:
        raise FlashI2VError(f"the uploaded file is {size / 2**20:.1f} MB, over the {max_mb:g} MB limit: "
                            "upload a smaller photo")
    try:
        return load_image(path)
    except Image.DecompressionBombError:
        raise FlashI2VError("the uploaded image has too many pixels to decode safely: upload a smaller photo") from None
    except FlashI2VError:
        name = Path(path).name
        raise FlashI2VError(f"'{name}' is not an image: upload a photo (PNG, JPEG, WebP, ...)") from None


def settings_text(seed: int, frames: int, steps: int, guidance: float, cutoff: float, solver: str, prompt: str) -> str:
    """One caption line per result, so results side by side can be compared."""
    return (f"**{prompt or '(no prompt)'}**  \nseed {seed} · {frames} frames · {steps} steps · "
            f"guidance {guidance:g} · detail {cutoff:g} · {solver}")


def build_app(pipe: FlashI2VPipeline, output_dir: str | os.PathLike | None = None, max_upload_mb: float = MAX_UPLOAD_MB,
              examples: list[list[str]] | None = None) -> gr.Blocks:
    """The page, over an already loaded pipeline. Videos are written to ``output_dir`` (default: a new temp dir)."""
    out = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="flashi2v-ui-"))
    out.mkdir(parents=True, exist_ok=True)
    d = model_settings(pipe)
    examples = example_photos() if examples is None else examples
    counter = {"n": 0}

    def check_photo(image_path):
        """On upload: show the photo, or the reason it cannot be used."""
        if not image_path:
            return None
        try:
            return read_upload(image_path, max_upload_mb)
        except FlashI2VError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def generate(image_path, prompt, negative_prompt, seed, frames, steps, guidance, cutoff, solver, history,
                 progress=gr.Progress(track_tqdm=True)):  # the pipeline's tqdm bar: one tick per denoising step
        try:
            image = read_upload(image_path, max_upload_mb)
            if seed is None or not 0 <= int(seed) <= SEED_MAX:
                raise FlashI2VError(f"seed {seed} is out of range: use 0..{SEED_MAX} (or press 'Random seed')")
            seed, frames, steps = int(seed), int(frames), int(steps)
            result = pipe(image, prompt or "", negative_prompt=negative_prompt or "", seed=seed, num_frames=frames,
                          steps=steps, guidance=float(guidance), cutoff=float(cutoff), solver=solver)
        except FlashI2VError as err:
            raise gr.Error(str(err), print_exception=False) from None
        counter["n"] += 1
        video = result.save(out / f"flashi2v_{counter['n']:04d}_seed{seed}.mp4", fps=FPS)
        caption = settings_text(seed, frames, steps, float(guidance), float(cutoff), solver, prompt)
        shown = list(history or [])  # the previous results, newest first
        history = ([(str(video), caption)] + shown)[:HISTORY + 1]
        slots = []
        for i in range(HISTORY):
            earlier = shown[i] if i < len(shown) else None
            slots += [gr.update(value=earlier[0] if earlier else None, visible=earlier is not None),
                      gr.update(value=earlier[1] if earlier else "", visible=earlier is not None)]
        return [str(video), caption, history, *slots]

    with gr.Blocks(title="FlashI2V", analytics_enabled=False) as app:
        gr.Markdown("# FlashI2V image-to-video\nUpload a photo, describe the motion, press **Generate**. "
                    f"Video: {d['width']}x{d['height']} at {FPS} fps.")
        history = gr.State([])
        with gr.Row():
            with gr.Column():
                # A file box, not gr.Image: gr.Image decodes uploads itself and answers a non-image with a bare
                # "Error"; here read_upload checks the file and says what is wrong. The preview shows what was read.
                image = gr.File(label="Photo (the first frame)", file_types=["image"], type="filepath",
                                elem_id="photo")
                preview = gr.Image(label="Photo", interactive=False, height=240, elem_id="preview")
                prompt = gr.Textbox(label="Prompt", lines=2, placeholder="e.g. the camera pans left", elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, value=d["negative_prompt"],
                                      elem_id="negative")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=SEED_MAX, elem_id="seed")
                    dice = gr.Button("Random seed", elem_id="random-seed", scale=0)
                frames = gr.Slider(1, max(MAX_FRAMES, d["num_frames"]), value=d["num_frames"], step=4,
                                   label="Frames (4k+1)", elem_id="frames")
                steps = gr.Slider(1, max(MAX_STEPS, d["steps"]), value=d["steps"], step=1, label="Steps",
                                  elem_id="steps")
                guidance = gr.Slider(0.0, max(MAX_GUIDANCE, d["guidance"]), value=d["guidance"], step=0.05,
                                     label="Guidance (1 = off)", elem_id="guidance")
                cutoff = gr.Slider(0.0, 0.99, value=d["cutoff"], step=0.01, label="Detail (cutoff)", info=CUTOFF_INFO,
                                   elem_id="cutoff")
                solver = gr.Dropdown(list(SOLVERS), value=d["solver"], label="Solver", elem_id="solver")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Result", format="mp4", autoplay=True, loop=True, buttons=["download"],
                                 height=360, elem_id="result")
                caption = gr.Markdown(elem_id="result-settings")
        gr.Markdown("### Earlier results")
        slots = []
        with gr.Row():
            for i in range(HISTORY):
                with gr.Column(min_width=160):
                    slots += [gr.Video(label=f"{i + 1} before", visible=False, loop=True, buttons=["download"],
                                       height=240, elem_id=f"earlier-{i}"),
                              gr.Markdown(visible=False, elem_id=f"earlier-settings-{i}")]
        if examples:
            # The preview among the inputs shows each example's photo in the table (a file box shows its name).
            gr.Examples([[photo, photo, text] for photo, text in examples], inputs=[image, preview, prompt],
                        label="Example photos (click one)")
        # Through the queue (where Gradio shows an error's message) but beside generations, not behind them.
        image.change(check_photo, inputs=image, outputs=preview, concurrency_limit=None, show_progress="hidden")
        dice.click(lambda: random.randint(0, SEED_MAX), outputs=seed, queue=False)
        run.click(generate, inputs=[image, prompt, negative, seed, frames, steps, guidance, cutoff, solver, history],
                  outputs=[video, caption, history, *slots], concurrency_limit=1)
    return app


def check_port_free(host: str, port: int) -> None:
    """One FlashI2VError line when ``host:port`` cannot be listened on (in use, or not this machine's address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closed port is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise FlashI2VError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port, or stop "
                                "what is using it") from None


def serve(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, max_upload_mb: float = MAX_UPLOAD_MB,
          queue_size: int = 16, block: bool = True) -> str:
    """Queue (one generation at a time, the rest wait in line) and start the server; returns its URL.
    ``block=False`` returns at once with the server running in a thread (tests)."""
    app.queue(default_concurrency_limit=1, max_size=queue_size)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # local fonts: nothing fetched
                              font_mono=["ui-monospace", "monospace"])
    _, url, _ = app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb:g}mb", share=False,
                           inbrowser=False, prevent_thread_lock=True, theme=theme, footer_links=[],
                           allowed_paths=[row[0] for row in example_photos()], ssr_mode=False,
                           quiet=True)  # Gradio's own banner suggests share=True, a public tunnel: not for this
    if block:
        print(f"flashi2v ui: open {url} in a browser (Ctrl+C stops the server)", file=sys.stderr)
        app.block_thread()
    return url


def launch(model: str = "builtin", host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", dtype=None,
           max_upload_mb: float = MAX_UPLOAD_MB) -> None:
    """Load the model once and serve the page until interrupted (the CLI's ``flashi2v ui``)."""
    if not max_upload_mb > 0:
        raise FlashI2VError(f"max upload size {max_upload_mb} MB must be > 0 (20 is the default)")
    check_port_free(host, port)  # before the model loads: a busy port is found in a second, not after it
    pipe = FlashI2VPipeline.from_pretrained(model, device=device, dtype=dtype)
    serve(build_app(pipe, max_upload_mb=max_upload_mb), host, port, max_upload_mb)
