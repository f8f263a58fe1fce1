"""GPU memory configurations of a generation, an estimate of each one's peak, and ``--memory-budget``.

A configuration says which weights wait in CPU memory and when: the text encoder streamed layer by layer
(``enable_text_encoder_offload``), the transformer in CPU memory during the VAE decode
(``enable_transformer_offload``), transformer blocks swapped in one at a time while denoising
(``enable_block_swap``), the VAE decode in tiles. ``MEMORY_CONFIGS`` lists them from the fastest to the
leanest; ``pick_memory_config`` takes the first whose estimated peak fits a budget.

The estimate is a model of torch's peak allocated memory, stage by stage (text encoding, image encoding,
denoising, decode): the weights each stage holds plus its activations. The activation constants come from
the H100 measurements of the 1.3B at 49 x 480 x 832 (docs/performance.md, "Generation" and "Memory
configurations"); ``benchmarks/memory_configs.py`` prints the estimate next to the measured peak of each
configuration. A budget must also hold the CUDA context and the allocator's slack: ``BUDGET_SHARE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import FlashI2VError
from .settings import GenerationSettings

GIB = 2**30
BUDGET_SHARE = 0.85  # the estimated peak (torch's allocations) must stay below this share of the budget
# Activations per unit, from the H100 stage peaks (benchmarks/results/h100-2026-11-24/generate_vae_probe.json):
# the Wan VAE's decode per output pixel-frame (bf16 4.45 GiB, float32 8.6 GiB at 49 x 480 x 832), its encode
# of one frame per pixel (2.02 GiB at 480 x 832, float32), and the denoising step per token and CFG branch,
# in units of (ffn_dim + 4 dim) x dtype bytes (1.31 GiB at 20280 tokens x 2 branches).
WAN_DECODE_BYTES_PER_PIXEL = {torch.bfloat16: 244.0, torch.float32: 472.0}
WAN_ENCODE_BYTES_PER_PIXEL = 5430.0
WAN_TILE_PIXELS = 256 * 256  # diffusers' AutoencoderKLWan tile (enable_tiling defaults)
DENOISE_ACTIVATION_FACTOR = 1.15


@dataclass(frozen=True)
class MemoryConfig:
    """One way of placing the weights. ``block_swap``: None (all blocks stay), else the number of blocks kept on
    the GPU while the rest are swapped in through ``swap_slots`` slots."""

    name: str
    text_encoder_offload: bool = True
    transformer_offload: bool = False
    block_swap: int | None = None
    swap_slots: int = 2
    vae_tiling: bool = False

    def describe(self) -> str:
        parts = ["text encoder streamed" if self.text_encoder_offload else "text encoder on the GPU"]
        if self.transformer_offload and self.block_swap is None:
            parts.append("transformer in CPU memory during the decode")
        if self.block_swap is not None:
            parts.append(f"{self.block_swap} blocks on the GPU, the rest swapped in {self.swap_slots} at a time")
        if self.vae_tiling:
            parts.append("tiled VAE decode")
        return ", ".join(parts)


# Fastest first, as expected before measuring (benchmarks/memory_configs.py measures them). The text encoder is
# streamed in all but the first: it runs once per generation (0.25 s for umT5-XXL at 480p) and would otherwise
# hold 11 GB. With block swapping the swapped blocks are in CPU memory during the decode anyway.
MEMORY_CONFIGS = (
    MemoryConfig("resident", text_encoder_offload=False),
    MemoryConfig("text-encoder-streamed"),
    MemoryConfig("offload-for-decode", transformer_offload=True),
    MemoryConfig("block-swap", transformer_offload=True, block_swap=0),
    MemoryConfig("offload-for-decode+tiled-decode", transformer_offload=True, vae_tiling=True),
    MemoryConfig("block-swap+tiled-decode", transformer_offload=True, block_swap=0, vae_tiling=True),
)
CONFIG_NAMES = tuple(c.name for c in MEMORY_CONFIGS)


def _bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _largest_layer_bytes(module: torch.nn.Module) -> int:
    """GPU bytes of a streamed module: its largest layer (``offload.stream_from_cpu`` holds one at a time;
    large embedding tables stay on the CPU)."""
    from .offload import CPU_EMBEDDING_BYTES

    largest = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Embedding) and _bytes(sub) >= CPU_EMBEDDING_BYTES:
            continue
        direct = sum(t.numel() * t.element_size() for t in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)))
        largest = max(largest, direct)
    return largest


def _is_wan_vae(vae) -> bool:
    return type(vae).__name__ == "WanVAE"


def estimate_peak(pipe, settings: GenerationSettings, config: MemoryConfig) -> dict:
    """Estimated peak GPU bytes of one generation of fully resolved ``settings`` under ``config``, per stage and
    overall (``"peak"``). Batch 1; both CFG branches in one batch."""
    transformer = pipe.transformer
    cfg = transformer.config
    blocks = [_bytes(b) for b in transformer.blocks]
    whole = _bytes(transformer)
    if config.block_swap is None:
        held = whole
    else:  # the blocks kept, the slots, and everything of the transformer that is not a block
        swapped = blocks[config.block_swap:]
        held = whole - sum(swapped) + min(config.swap_slots, len(swapped)) * max(swapped, default=0)
    # Offloaded for the decode, the transformer waits in CPU memory until the next denoising; the first
    # generation still holds it while encoding, so only the decode counts it out.
    decode_held = 0 if config.transformer_offload and config.block_swap is None else held
    text_model = getattr(pipe.text_encoder, "model", pipe.text_encoder)
    text_held = 0 if config.text_encoder_offload else _bytes(text_model)
    text = _largest_layer_bytes(text_model) if config.text_encoder_offload else 0
    vae = _bytes(pipe.vae)
    frames, height, width = settings.num_frames, settings.height, settings.width
    latent_frames, latent_h, latent_w = pipe.latent_factors.latent_shape(frames, height, width)
    latents = 4 * cfg.out_dim * latent_frames * latent_h * latent_w * 4  # z, noise, phi(s), s_high in float32
    branches = 2 if settings.guidance != 1.0 else 1
    tokens = pipe.latent_factors.tokens(frames, height, width)
    itemsize = pipe.dtype.itemsize
    activations = DENOISE_ACTIVATION_FACTOR * branches * tokens * (cfg.ffn_dim + 4 * cfg.dim) * itemsize
    video = frames * height * width * 3 * (4 + 1)  # float32 pixels and uint8 frames
    if _is_wan_vae(pipe.vae):
        per_pixel = WAN_DECODE_BYTES_PER_PIXEL[torch.bfloat16 if pipe.vae.decode_dtype == torch.bfloat16 else torch.float32]
        tiled = config.vae_tiling and height * width > WAN_TILE_PIXELS  # one tile covers a small video
        area = WAN_TILE_PIXELS if tiled else height * width
        decode = per_pixel * frames * area + (video if tiled else 0)  # tiles are blended into a whole video
        encode = WAN_ENCODE_BYTES_PER_PIXEL * area
    else:  # a light codec (the built-in block-PCA one): its output and a copy
        decode, encode = 2 * video, 2 * height * width * 3 * 4
    stages = {
        "text_encoding": held + vae + text_held + text,
        "image_encoding": held + vae + text_held + encode,
        "denoising": held + vae + text_held + latents + activations,
        "decode": decode_held + vae + text_held + latents + decode,
    }
    stages = {k: int(v) for k, v in stages.items()}
    stages["peak"] = max(stages.values())
    return stages


# Configurations whose estimated peak an H100 measurement confirmed (docs/performance.md, "Memory configurations":
# every estimate within 11 % of the measured peak). offload-for-decode+tiled-decode was measured only before the
# offload._compact fix, higher than estimated for that bug's reason, and waits for a new measurement.
CONFIRMED_ON_GPU = ("resident", "text-encoder-streamed", "offload-for-decode", "block-swap", "block-swap+tiled-decode")


def pick_memory_config(pipe, settings: GenerationSettings, budget_bytes: float,
                       configs: tuple[MemoryConfig, ...] = MEMORY_CONFIGS) -> tuple[MemoryConfig, dict]:
    """The first (fastest) configuration whose estimated peak is at most ``BUDGET_SHARE`` of the budget, and its
    estimate; FlashI2VError naming the leanest one's need when none fits."""
    estimates = [(c, estimate_peak(pipe, settings, c)) for c in configs]
    for config, estimate in estimates:
        if estimate["peak"] <= BUDGET_SHARE * budget_bytes:
            return config, estimate
    leanest, estimate = estimates[-1]
    need = estimate["peak"] / BUDGET_SHARE / 1e9
    raise FlashI2VError(f"no memory configuration fits {budget_bytes / 1e9:.1f} GB for {settings.num_frames} frames of "
                        f"{settings.height}x{settings.width}: the leanest ({leanest.name}) needs about {need:.1f} GB; "
                        "use fewer frames or a smaller size")


def apply_memory_config(pipe, config: MemoryConfig):
    """Set up ``pipe`` (on its device already) as ``config`` says. Weights already streamed or swapped stay so:
    apply a leaner configuration after a faster one, not the other way round."""
    if config.text_encoder_offload:
        pipe.enable_text_encoder_offload()
    if config.block_swap is not None:
        pipe.enable_block_swap(config.block_swap, config.swap_slots)
    else:
        pipe.disable_block_swap()
    pipe.enable_transformer_offload(config.transformer_offload and config.block_swap is None)
    vae = pipe.vae
    if config.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    elif not config.vae_tiling and hasattr(vae, "vae") and hasattr(vae.vae, "disable_tiling"):
        vae.vae.disable_tiling()
    return pipe
