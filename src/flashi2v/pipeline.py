"""FlashI2VPipeline: image + prompt -> video. ``__call__`` reads top to bottom like the algorithm.

Folder layout (diffusers-like): ``transformer/`` (config.json + model.safetensors, our format),
``vae/`` (diffusers AutoencoderKLWan), ``text_encoder/`` (transformers UMT5EncoderModel), ``tokenizer/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import flow
from .device import device_memory_bytes, resolve_device
from .encoders import UMT5TextEncoder, WanVAE, load_text_encoder, load_vae
from .errors import FlashI2VError, FlashI2VWarning
from .jsonfile import read_json_object
from .model import FlashI2VTransformer
from .paradigms import ConditionLatents, Paradigm, check_input_width, get_paradigm
from .sampling import SOLVERS, conditioned_velocity, model_evaluations
from .settings import GenerationSettings, LatentFactors, check_fits, check_seed, estimate_bytes, far_from_trained
from .step_cache import step_cache_scope
from .stopwatch import Stopwatch
from .video import image_to_tensor, to_uint8, write_mp4

# Wan2.1's standard negative prompt (what the reference pipeline uses when none is given).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
FPS = 16
PIPELINE_CONFIG = "pipeline.json"


@dataclass
class FlashI2VOutput:
    """frames: uint8 T x H x W x 3 (B x T x H x W x 3 for a list of prompts); latents: the clean latent;
    timings: wall seconds per stage, back to back over the whole call: "encode" (everything before the first
    denoising step: settings, text and image encoding, noise), "denoise", "decode" (absent for output_type "latent")."""

    frames: torch.Tensor | None
    latents: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | os.PathLike, fps: int = FPS) -> Path:
        """Write the video (the first one, for a batch) as mp4."""
        frames = self.frames if self.frames.ndim == 4 else self.frames[0]
        return export_to_mp4(frames, path, fps=fps)


def export_to_mp4(frames: torch.Tensor, path: str | os.PathLike, fps: int = FPS) -> Path:
    """uint8 T x H x W x 3 -> mp4 at ``fps`` (16, FlashI2V's training rate)."""
    write_mp4(frames, path, fps=fps)
    return Path(path)


class FlashI2VPipeline:
    """Image + prompt -> video with a FlashI2V transformer, the Wan VAE and a umT5-style text encoder.

    ``defaults`` holds the generation settings this model was made for (frames, size, steps, ...; the
    fields of ``GenerationSettings`` and ``negative_prompt``): settings a call leaves unset come from
    there, then from FlashI2V-1.3B's. Stored as pipeline.json beside the components.
    """

    def __init__(self, transformer: FlashI2VTransformer, vae: WanVAE, text_encoder: UMT5TextEncoder,
                 signed_fourier: bool = False, defaults: dict | None = None):
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.signed_fourier = signed_fourier
        self.defaults = dict(defaults or {})
        self.text_encoder_offloaded = False
        self.transformer_offload = False  # see enable_transformer_offload
        self._transformer_home: torch.device | None = None  # where the transformer runs while offloaded

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0, merge: bool = False) -> "FlashI2VPipeline":
        """Apply a LoRA adapter folder (peft layout, e.g. a training run's lora/) to the transformer, its update
        times ``scale``. ``merge``: fold it into the base weights at once (sampling then costs what the base
        costs; the scale is fixed). Load before enable_fast_path. A LoRA of another model is refused."""
        from .lora import load_lora, merge_lora

        load_lora(self.transformer, path, scale, adapter_dtype=torch.float32 if merge else None)
        if merge:
            merge_lora(self.transformer)
        return self

    def merge_lora(self) -> "FlashI2VPipeline":
        """Fold the loaded LoRA into the base weights (flashi2v.lora.merge_lora)."""
        from .lora import merge_lora

        merge_lora(self.transformer)
        return self

    def enable_fast_path(self, **kwargs) -> "FlashI2VPipeline":
        """Speed up the transformer in place with ``flashi2v.fast_path.recipe.apply_fast_path`` (FA4 or cuDNN
        attention, GELU in the matmul epilogue, Triton norm kernels, fused QKV, compiled blocks; same function to bf16
        rounding; speed in docs/performance.md). The first call at each video size compiles.
        ``kwargs`` go through."""
        from .fast_path.recipe import apply_fast_path

        apply_fast_path(self.transformer, **kwargs)
        return self

    def enable_step_cache(self, threshold: float | None = None, warmup_steps: int = 1, final_steps: int = 1) -> "FlashI2VPipeline":
        """Skip transformer blocks 1..N-1 on steps where block 0's output barely changed (first-block cache,
        ``flashi2v.step_cache``); off by default. Higher ``threshold`` skips more; 0 never skips; None: the
        recommended ``flashi2v.step_cache.DEFAULT_THRESHOLD``. Caching can
        slow or freeze motion: ``benchmarks/step_cache.py`` measures a threshold against the uncached run.
        Counters of the last generation: ``self.transformer.step_cache.stats()``."""
        from .step_cache import DEFAULT_THRESHOLD, apply_step_cache

        apply_step_cache(self.transformer, DEFAULT_THRESHOLD if threshold is None else threshold, warmup_steps,
                         final_steps)
        return self

    def disable_step_cache(self) -> "FlashI2VPipeline":
        from .step_cache import remove_step_cache

        remove_step_cache(self.transformer)
        return self

    def enable_text_encoder_offload(self) -> "FlashI2VPipeline":
        """Keep the text encoder's weights in CPU memory; stream them layer by layer to the transformer's
        device while a prompt is encoded (``flashi2v.offload.stream_from_cpu``).

        umT5-XXL is 11 GB in bf16, four times the 1.3B transformer: offloaded, a 480p generation needs far
        less GPU memory (docs/performance.md, "Generation") for one pass of the weights over PCIe per generation.
        Same embeddings as without offload. Call after moving the pipeline to its device.
        """
        from .offload import stream_from_cpu

        if not self.text_encoder_offloaded:
            stream_from_cpu(self.text_encoder.model, self.device)
            self.text_encoder_offloaded = True
        return self

    def enable_bf16_vae_decode(self, enabled: bool = True) -> "FlashI2VPipeline":
        """Decode the video with the Wan VAE in bfloat16 (``WanVAE.enable_bf16_decode``): faster, with about
        half the decode memory, pixels slightly different from the float32 decode (time, memory and difference:
        docs/performance.md, "Use it"). No effect on a VAE without that option (the built-in codec is exact)."""
        if hasattr(self.vae, "enable_bf16_decode"):
            self.vae.enable_bf16_decode(enabled)
        return self

    def enable_transformer_offload(self, enabled: bool = True) -> "FlashI2VPipeline":
        """Move the transformer's weights to pinned CPU memory for the VAE decode, where they are not needed,
        and back to the GPU (asynchronously, in stream order) when the next generation starts denoising.

        Lowers the decode's peak GPU memory by the transformer's size (1.3B in bf16: 2.65 GiB) for two
        copies over PCIe per generation; same video. A no-op on the CPU. Not together with CUDA graphs
        (``apply_cuda_graphs``), which read the weights at fixed addresses.
        """
        if enabled and getattr(self.transformer, "_cuda_graphs", None) is not None:
            raise FlashI2VError("enable_transformer_offload cannot be combined with CUDA graphs (apply_cuda_graphs)")
        self.transformer_offload = enabled
        if not enabled:
            self._transformer_to_device()
        return self

    def enable_block_swap(self, blocks_on_device: int = 0, slots: int = 2) -> "FlashI2VPipeline":
        """While denoising, keep only ``blocks_on_device`` transformer blocks (plus ``slots`` in turn) on the GPU; the
        rest wait in pinned CPU memory and are copied in one block ahead, overlapped with the compute
        (``flashi2v.offload.apply_block_swap``). Same video. Call after moving the pipeline to its device; replaces the
        transformer offload for the decode (the swapped blocks are in CPU memory already)."""
        from .offload import apply_block_swap

        self._transformer_to_device()
        apply_block_swap(self.transformer, blocks_on_device, slots)
        return self

    def disable_block_swap(self) -> "FlashI2VPipeline":
        from .offload import remove_block_swap

        remove_block_swap(self.transformer)
        return self

    def _offload_transformer(self) -> None:
        device = self.device
        if (not self.transformer_offload or device.type != "cuda" or self._transformer_home is not None
                or getattr(self.transformer, "_cuda_graphs", None) is not None
                or getattr(self.transformer, "block_swap", None) is not None):
            return
        from .offload import offload_to_cpu

        offload_to_cpu(self.transformer, non_blocking=True)  # queued before the decode: its memory is reused
        self._transformer_home = device

    def _transformer_to_device(self) -> None:
        if self._transformer_home is not None:
            from .offload import load_to_device

            load_to_device(self.transformer, self._transformer_home, non_blocking=True)
            self._transformer_home = None

    # -- loading / saving ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, vae_tiling: bool = False,
                        text_encoder=None, paradigm: str | None = None, components_repo: str | None = None,
                        token: str | bool | None = None) -> "FlashI2VPipeline":
        """Load a pipeline folder, ``"builtin"`` (the small model shipped in the package), or a Hugging Face Hub
        model ``"ORG/NAME[@REVISION]"`` (e.g. ``"yunyangge/FlashI2V-1.3B"``; ``flashi2v.hub``): downloaded into
        huggingface_hub's cache, converted once from any published layout into flashi2v's cache, reused after.
        ``components_repo``: where a Hub model without VAE / text encoder / tokenizer takes them (default
        Wan-AI/Wan2.1-T2V-1.3B-Diffusers); ``token``: a Hub token (default: HF_TOKEN or the stored login).
        ``dtype`` is the transformer's and text encoder's compute dtype
        (the VAE's weights stay float32; it decodes in float32 unless ``enable_bf16_vae_decode()``). ``text_encoder``:
        a loaded encoder to use instead of the folder's (e.g. where the folder's package is not installed); the
        folder's pipeline.json settings apply either way. The model samples with the paradigm it was trained
        with (its config.json); ``paradigm``, when given, must be that one."""
        device = resolve_device(device)  # "auto", or a one-line error for a device this machine lacks
        if dtype is None and torch.device(device).type == "cpu":
            dtype = torch.float32  # half precision on a CPU is slow and imprecise
        from .hub.resolve import resolve_model

        folder = resolve_model(folder, components_repo=components_repo, token=token)  # a folder stays as it is
        if not folder.is_dir():
            raise FlashI2VError(f"model folder '{folder}' does not exist: pass a folder with transformer/, vae/, text_encoder/, tokenizer/")
        for sub in ("transformer", "vae") + (("text_encoder",) if text_encoder is None else ()):
            if not (folder / sub).is_dir():
                raise FlashI2VError(f"model folder '{folder}' has no {sub}/ subfolder: see the README section on model folders")
        config = _read_pipeline_config(folder / PIPELINE_CONFIG)  # before the weights: a broken one fails fast
        # The EMA weights, when a checkpoint carries both, are the ones to sample from (as the authors do).
        weights = folder / "transformer_ema" if (folder / "transformer_ema").is_dir() else folder / "transformer"
        transformer = FlashI2VTransformer.from_pretrained(weights, device=device, dtype=dtype)
        if paradigm is not None and paradigm != transformer.config.paradigm:
            get_paradigm(paradigm)  # an unknown name says so first
            raise FlashI2VError(f"'{folder}' holds a model trained with paradigm {transformer.config.paradigm!r}, not "
                                f"{paradigm!r}: a model samples only with its own paradigm (leave it unset)")
        vae = load_vae(folder / "vae", device=device, tiling=vae_tiling)
        check_input_width(transformer.config, vae.temporal_factor)
        if text_encoder is None:
            text_encoder = load_text_encoder(folder / "text_encoder", folder / "tokenizer", device=device,
                                             dtype=dtype or torch.float32)
        return cls(transformer, vae, text_encoder, signed_fourier=config.get("signed_fourier", False),
                   defaults=config.get("defaults"))

    def save_pretrained(self, folder: str | os.PathLike, push_to_hub: bool = False, repo_id: str | None = None,
                        private: bool | None = None, token: str | bool | None = None,
                        training_data: str | None = None) -> None:
        """Write the pipeline folder; with ``push_to_hub``, also upload it to ``repo_id`` with a model card
        (``flashi2v.hub.push_to_hub``; ``training_data``: a sentence for the card)."""
        if push_to_hub:
            from .hub.refs import check_repo_id

            check_repo_id(repo_id)  # before writing anything
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"signed_fourier": self.signed_fourier, "defaults": self.defaults}
        (folder / PIPELINE_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
        self.transformer.save_pretrained(folder / "transformer")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder", folder / "tokenizer")
        if push_to_hub:
            from .hub.upload import push_to_hub as push

            push(folder, repo_id, private=private, token=token, training_data=training_data)

    def to(self, device: str | torch.device) -> "FlashI2VPipeline":
        device = resolve_device(device)
        for module in (self.transformer, self.vae, self.text_encoder):
            if module is self.text_encoder and self.text_encoder_offloaded:
                self.text_encoder.model._flashi2v_streamed_to = torch.device(device)
                continue
            module.to(device)
        self._transformer_home = None  # an offloaded transformer is now wherever .to put it
        return self

    @property
    def device(self) -> torch.device:
        if self._transformer_home is not None:  # offloaded for the VAE decode (enable_transformer_offload)
            return self._transformer_home
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def latent_factors(self) -> LatentFactors:
        """How this model divides a video: its VAE's compression times its transformer's patch size."""
        return LatentFactors(self.vae.temporal_factor, self.vae.spatial_factor, self.transformer.config.patch_size)

    def resolve_settings(self, settings: GenerationSettings | None = None) -> GenerationSettings:
        """``settings`` with everything unset taken from this model's defaults, checked against this model
        (FlashI2VError, one line)."""
        settings = (settings or GenerationSettings()).resolved(self.defaults)
        settings.check(self.latent_factors)
        return settings

    def check_size(self, settings: GenerationSettings, batch: int = 1) -> None:
        """FlashI2VError before anything is allocated when a generation cannot fit in the device's memory
        (``flashi2v.settings.estimate_bytes``, a lower bound); a FlashI2VWarning when it fits but is far
        from the size this model was made for."""
        config = self.transformer.config
        needed = estimate_bytes(settings, self.latent_factors, batch, config.in_dim, config.ffn_dim,
                                self.dtype.itemsize)
        check_fits(needed, device_memory_bytes(self.device), settings, f"device {self.device}")
        warning = far_from_trained(settings, self.defaults)
        if warning:
            warnings.warn(warning, FlashI2VWarning, stacklevel=4)  # check_size <- __call__ <- no_grad <- caller

    # -- stages ----------------------------------------------------------------------------------

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """B x text_len x text_dim float32 embeddings (zero beyond each prompt's length)."""
        return self.text_encoder.encode(prompts, max_length=self.transformer.config.text_len).to(self.device)

    @property
    def paradigm(self) -> Paradigm:
        """How the condition image enters this model (its config's ``paradigm``; ``flashi2v.paradigms``)."""
        return get_paradigm(self.transformer.config.paradigm)

    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels B x 3 x F x H x W in [-1, 1] -> normalised float32 latents on the pipeline's device."""
        return self.vae.encode(pixels.to(self.vae.device)).float().to(self.device)

    def encode_image(self, images: list, height: int, width: int) -> torch.Tensor:
        """Condition latent s: each image centre-crop-resized, in [-1, 1], encoded as a 1-frame video: B x C x 1 x h x w."""
        return self.encode_latents(self.image_pixels(images, height, width))

    @staticmethod
    def image_pixels(images: list, height: int, width: int) -> torch.Tensor:
        """Each image centre-crop-resized to height x width, in [-1, 1], as a 1-frame video: B x 3 x 1 x H x W."""
        return torch.stack([image_to_tensor(im, height, width) for im in images])[:, :, None]

    def prepare_noise(self, shape, seed: int | None, generator: torch.Generator | None) -> torch.Tensor:
        """eps ~ N(0, I) in float32, drawn on the CPU so a seed gives the same video on any device."""
        if generator is None:
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        image: str | os.PathLike | Image.Image | torch.Tensor | list,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        shift: float | None = None,
        cutoff: float | None = None,
        seed: int | list[int] | None = None,
        generator: torch.Generator | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "frames",
        progress: bool = True,
        batch_cfg: bool = True,
        step_cache: float | None = None,
        guidance_mode: str | None = None,
        solver: str | None = None,
    ) -> FlashI2VOutput:
        """Generate a video whose first frame is ``image``, following ``prompt``.

        cutoff is rho, the low-frequency energy ratio of the Fourier guidance: lower keeps more detail.
        output_type "latent" skips the VAE decode.
        step_cache: a threshold for step caching in this call only (see ``enable_step_cache``); None: as enabled.
        guidance_mode: "cfg" (plain classifier-free guidance, the default) or "mean_free" (the guidance update
        without its per-channel spatial mean, ``flashi2v.sampling.mean_free_cfg``: no CFG colour shift).
        solver: "euler" (the reference, the default), "dpmpp_2m" (second-order multistep, same cost) or "heun"
        (second order, two model evaluations per step); see ``flashi2v.sampling``.
        """
        clock = Stopwatch(self.device)  # synchronises on CUDA: each stage's GPU work is counted in that stage
        # 1. Fill unset settings from this model's defaults (FlashI2V-1.3B: 49 x 480 x 832, 50 steps,
        #    guidance 5, shift 7, cutoff 0.1), check them against this model, and check that they fit.
        settings = self.resolve_settings(GenerationSettings(
            num_frames=num_frames, height=height, width=width, steps=steps, guidance=guidance,
            guidance_mode=guidance_mode, solver=solver, shift=shift, cutoff=cutoff))
        num_frames, height, width, steps, guidance, guidance_mode, solver, shift, cutoff = dataclasses.astuple(settings)
        seeds = list(seed) if isinstance(seed, (list, tuple)) else None  # one per video: batch-size independent
        for one in seeds if seeds is not None else [seed]:
            check_seed(one)
        if negative_prompt is None:
            negative_prompt = self.defaults.get("negative_prompt", WAN_NEGATIVE_PROMPT)
        single = isinstance(prompt, str) or (prompt is None and prompt_embeds is not None and prompt_embeds.shape[0] == 1)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        batch = len(prompts) if prompts else prompt_embeds.shape[0]
        images = image if isinstance(image, list) else [image] * batch
        if len(images) != batch:
            raise FlashI2VError(f"got {len(images)} images for {batch} prompts: pass one image, or one per prompt")
        self.check_size(settings, batch)
        if seeds is not None and (len(seeds) != batch or generator is not None):
            raise FlashI2VError(f"got {len(seeds)} seeds for {batch} videos" if generator is None else
                                "pass seed or generator, not both: a list of seeds makes one generator per video")

        # 2. Encode the prompt and (for CFG) the negative prompt.
        #    Prompt and negative prompt go through the text encoder together: one pass of its weights.
        use_cfg = guidance != 1.0
        negative = None
        if use_cfg and negative_prompt_embeds is None:
            negative = negative_prompt if negative_prompt is not None else WAN_NEGATIVE_PROMPT
            negative = [negative] * batch if isinstance(negative, str) else list(negative)
        if prompt_embeds is None and negative is not None:
            context, negative_context = self.encode_prompt(prompts + negative).split([batch, len(negative)])
        else:
            context = prompt_embeds.to(self.device) if prompt_embeds is not None else self.encode_prompt(prompts)
            negative_context = None
            if use_cfg:
                negative_context = (negative_prompt_embeds.to(self.device) if negative_prompt_embeds is not None
                                    else self.encode_prompt(negative))

        # 3. Start from noise: z = eps at sigma = 1 (the latent's channels, whatever the DiT's input width).
        latent_frames, latent_height, latent_width = self.latent_factors.latent_shape(num_frames, height, width)
        shape = (batch, self.transformer.config.out_dim, latent_frames, latent_height, latent_width)
        if seeds is not None:  # video k of the batch is the video generated alone with seed[k]
            generators = [torch.Generator().manual_seed(one) for one in seeds]
            z = torch.cat([self.prepare_noise((1, *shape[1:]), None, g) for g in generators])
        else:
            if generator is None:
                generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**63)
            generators = [generator]
            z = self.prepare_noise(shape, seed, generator)

        # 4. Encode the condition image as the model's paradigm says; for FlashI2V phi(s) and s_high, once
        #    for the whole generation (a concatenating paradigm's channels, likewise).
        paradigm = self.paradigm
        pixels = self.image_pixels(images, height, width)
        parts = [paradigm.encode_condition(self.encode_latents, part, num_frames, self.vae.temporal_factor,
                                           training=False, generator=g)
                 for part, g in zip(pixels.split(len(pixels) // len(generators)), generators)]
        latents = ConditionLatents(*(None if t[0] is None else torch.cat(t)
                                     for t in zip(*((p.s, p.extra) for p in parts))))
        self._transformer_to_device()  # back from the CPU if the last decode offloaded it
        condition = paradigm.condition(self.transformer, latents, latent_frames, cutoff, self.signed_fourier)

        clock.lap("encode")

        # 5. Integrate the flow ODE from sigma = 1 to 0 on the static-shifted grid (Euler in the reference).
        sigmas = flow.sigma_schedule(steps, shift, device=self.device)
        velocity = conditioned_velocity(self.transformer, condition, context, negative_context, guidance,
                                        batch_cfg=batch_cfg, guidance_mode=guidance_mode)
        #    Step cache (off unless enabled): reset per generation, so nothing carries over between calls.
        with step_cache_scope(self.transformer, step_cache, model_evaluations(solver, steps)) as cache, \
                tqdm(total=steps, desc="denoising", unit="step", disable=not progress) as bar:
            if cache is not None and model_evaluations(solver, steps) != steps:
                raise FlashI2VError(f"step caching tracks one model evaluation per step, which solver {solver!r} "
                                    "does not make: use solver 'euler' or 'dpmpp_2m' with it, or no step cache")
            z = SOLVERS[solver](velocity, z, sigmas, callback=lambda i, _: bar.update(1))

        clock.lap("denoise")

        # 6. z is the clean latent x: decode it directly (phi(s) is not added back).
        if output_type == "latent":
            return FlashI2VOutput(frames=None, latents=z, timings=clock.times)
        self._offload_transformer()  # enable_transformer_offload: its GPU memory is free for the decode
        pixels = self.vae.decode(z.to(self.vae.device))  # B x 3 x F x H x W in [-1, 1]
        frames = to_uint8(pixels.permute(0, 2, 3, 4, 1)).cpu()  # B x F x H x W x 3
        clock.lap("decode")
        return FlashI2VOutput(frames=frames[0] if single else frames, latents=z, timings=clock.times)

    def generate_segments(self, image, prompt: str | list[str], segments: int, **kwargs):
        """A longer video: ``segments`` clips, each conditioned on the last frame of the one before, joined without
        repeating the shared frame (N (F - 1) + 1 frames). ``prompt``: one, or a list of one per segment.
        ``colour_match`` / ``cutoff_decay``: the drift counter-measures; other keywords as for ``__call__``.
        Returns ``flashi2v.segments.SegmentsOutput``; see that module."""
        from .segments import generate_segments

        return generate_segments(self, image, prompt, segments, **kwargs)


def _read_pipeline_config(path: Path) -> dict:
    """pipeline.json ({} when absent); a broken one (invalid JSON, a default of the wrong type or out of range,
    an unknown key) is a one-line error naming the file, before any weights load."""
    if not path.is_file():
        return {}
    settings = read_json_object(path)
    defaults = settings.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise FlashI2VError(f"'{path}': \"defaults\" must be a JSON object of generation settings: restore the file")
    if not isinstance(settings.get("signed_fourier", False), bool):
        raise FlashI2VError(f"'{path}': \"signed_fourier\" must be true or false: restore the file")
    unknown = sorted(set(defaults) - set(GenerationSettings.names()) - {"negative_prompt"})
    if unknown:
        raise FlashI2VError(f"'{path}': unknown default(s) {unknown}: use {', '.join(GenerationSettings.names())} "
                            "or negative_prompt")
    if not isinstance(defaults.get("negative_prompt", ""), str):
        raise FlashI2VError(f"'{path}': \"negative_prompt\" must be a string: restore the file")
    try:
        GenerationSettings(**{k: v for k, v in defaults.items() if k != "negative_prompt"}).check()
    except FlashI2VError as err:
        raise FlashI2VError(f"'{path}': default {err}: restore the file") from None
    return settings
