"""Block swapping (flashi2v.offload.apply_block_swap): blocks visit the device one at a time, same function."""

import pytest
import torch

from flashi2v import FlashI2VTransformer
from flashi2v.offload import apply_block_swap, remove_block_swap
from flashi2v.step_cache import apply_step_cache, remove_step_cache

from helpers_tiny import randomize_zero_parameters


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = FlashI2VTransformer.from_config("tiny", num_layers=5).eval()
    return randomize_zero_parameters(m)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    t = torch.tensor([900.0, 300.0])
    context = torch.randn(2, 7, 32, generator=g)
    s_high = torch.randn(2, 16, 3, 8, 8, generator=g).abs()
    return x, t, context, s_high


def home_of(swap, j):
    home = swap.homes[j]
    lo = home.data_ptr()
    return lo, lo + home.numel()


@pytest.mark.parametrize("blocks_on_device, slots", [(0, 2), (1, 2), (2, 3), (3, 2)])
@pytest.mark.parametrize("defer", [False, True])
@torch.no_grad()
def test_block_swap_gives_the_plain_models_output(model, blocks_on_device, slots, defer):
    model.defer_residuals = defer
    try:
        plain = [model(*inputs(seed)) for seed in range(3)]
        swap = apply_block_swap(model, blocks_on_device=blocks_on_device, slots=slots)
        swapped = len(model.blocks) - blocks_on_device
        assert len(swap.blocks) == swapped and len(swap.slots) == min(slots, swapped)
        for seed in range(3):
            assert torch.equal(model(*inputs(seed)), plain[seed])
        # outside a forward every swapped weight is back in its pinned home, none in a slot
        for j, block in enumerate(swap.blocks):
            lo, hi = home_of(swap, j)
            assert all(lo <= p.data_ptr() < hi for p in block.parameters())
        # more swapped blocks than slots: each forward copies every swapped block in once (and the last block
        # prefetches the next forward's first); else each block is copied once and stays in its slot
        assert swap.copies == (3 * swapped + 1 if swapped > len(swap.slots) else swapped)
        remove_block_swap(model)
        assert model.block_swap is None
        assert torch.equal(model(*inputs(0)), plain[0])
    finally:
        remove_block_swap(model)
        model.defer_residuals = False


@torch.no_grad()
def test_block_swap_with_step_cache_skipping_blocks(model):
    """The step cache skips blocks 1..N-1 on some steps: a block prefetched but not run must not be taken for
    the block that runs next."""
    x, _, context, s_high = inputs(0)

    def run():
        cache = apply_step_cache(model, threshold=10.0, warmup_steps=1, final_steps=0)
        outs = [model(x + 0.1 * i, torch.full((2,), 900.0 - 200 * i), context, s_high) for i in range(4)]
        skipped = cache.stats()["skipped"]
        remove_step_cache(model)
        return outs, skipped

    plain, skipped = run()
    assert skipped > 0
    apply_block_swap(model, blocks_on_device=0, slots=2)
    try:
        swapped, _ = run()
    finally:
        remove_block_swap(model)
    for a, b in zip(plain, swapped):
        assert torch.equal(a, b)


@torch.no_grad()
def test_block_swap_keeps_fused_qkv_views(model):
    """The fast path's fused q/k/v (views of one buffer per block) must stay views of one slot while swapped."""
    from flashi2v.fast_path.fusion import fuse_qkv

    fused = FlashI2VTransformer.from_config("tiny", num_layers=5).eval()
    fused.load_state_dict(model.state_dict())
    fuse_qkv(fused)
    plain = fused(*inputs(0))
    swap = apply_block_swap(fused, blocks_on_device=0, slots=2)
    assert torch.equal(fused(*inputs(0)), plain)
    for j, block in enumerate(swap.blocks):
        attn = block.self_attn
        lo, hi = home_of(swap, j)
        assert lo <= attn.qkv_weight.data_ptr() < hi
        assert attn.q.weight.data_ptr() == attn.qkv_weight.data_ptr()


@torch.no_grad()
def test_block_swap_of_a_model_in_one_storage_copies_only_each_blocks_bytes(model):
    """After offload_to_cpu / load_to_device the whole model lives in one storage: each block's home must hold
    that block's bytes, not the whole storage."""
    from flashi2v.offload import load_to_device, offload_to_cpu

    one = FlashI2VTransformer.from_config("tiny", num_layers=5).eval()
    one.load_state_dict(model.state_dict())
    plain = one(*inputs(1))
    offload_to_cpu(one, force=True)
    load_to_device(one, "cpu", force=True)
    assert len({p.untyped_storage().data_ptr() for p in one.parameters()}) == 1
    whole = next(one.parameters()).untyped_storage().nbytes()
    swap = apply_block_swap(one, blocks_on_device=2, slots=2)
    for block, home in zip(one.blocks[2:], swap.homes):
        assert home.numel() < 2 * sum(p.numel() * p.element_size() for p in block.parameters())
    # what stays on the device (two blocks, embeddings, head) no longer holds the whole model's storage
    swapped = {id(p) for block in one.blocks[2:] for p in block.parameters()}
    kept = [p for p in one.parameters() if id(p) not in swapped]
    held = sum({p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in kept}.values())
    assert held < 1.5 * sum(p.numel() * p.element_size() for p in kept) < whole
    assert torch.equal(one(*inputs(1)), plain)
    remove_block_swap(one)
    assert torch.equal(one(*inputs(1)), plain)


def test_pipeline_latents_unchanged_by_block_swap(make_tiny_pipeline, example_image):
    pipe = make_tiny_pipeline()
    kwargs = dict(num_frames=5, height=32, width=32, steps=3, seed=2, progress=False, output_type="latent")
    plain = pipe(example_image, "a dog runs", **kwargs).latents
    apply_block_swap(pipe.transformer, blocks_on_device=0, slots=2)
    assert torch.equal(pipe(example_image, "a dog runs", **kwargs).latents, plain)


def held_bytes(model):
    """Bytes the model would hold on its device outside a forward: every storage its tensors point at, except the
    swapped blocks' pinned homes, plus the swap slots."""
    swap = getattr(model, "block_swap", None)
    homes = {h.untyped_storage().data_ptr() for h in swap.homes} if swap else set()
    storages = {}
    for t in (*model.parameters(), *model.buffers()):
        st = t.untyped_storage()
        if st.data_ptr() not in homes:
            storages[st.data_ptr()] = st.nbytes()
    return sum(storages.values()) + (swap.nbytes if swap else 0)


@torch.no_grad()
def test_memory_configurations_in_a_row_hold_no_dead_bytes(model):
    """benchmarks/memory_configs.py's order on one model: offload for the decode (the model comes back as one
    storage), block swap, swap removed and offload again, block swap again. The H100 run before
    ``offload._compact`` held the whole model's storage beside the swap (3.3 GiB), then a second copy of it after
    the swap was removed (5.8 GiB): each step must hold only the bytes of what it keeps (plus alignment)."""
    from flashi2v.fast_path.fusion import fuse_qkv
    from flashi2v.offload import load_to_device, offload_to_cpu

    m = FlashI2VTransformer.from_config("tiny", num_layers=5).eval()
    m.load_state_dict(model.state_dict())
    fuse_qkv(m)  # the fast path's views of one buffer per block
    plain = m(*inputs(2))
    whole = held_bytes(m)  # every storage its own, none shared: the bytes the model needs
    slack = 256 * sum(1 for _ in (*m.parameters(), *m.buffers()))  # storages start 256-byte aligned

    def generation_with_offload():  # what the pipeline does on a GPU around the decode and the next denoising
        offload_to_cpu(m, force=True)
        load_to_device(m, "cpu", force=True)

    def swapped_held():
        swap = m.block_swap
        return whole - sum(h.numel() for h in swap.homes) + swap.nbytes

    generation_with_offload()  # offload-for-decode
    assert len({p.untyped_storage().data_ptr() for p in m.parameters()}) == 1
    assert held_bytes(m) <= whole + slack
    for _ in range(2):
        apply_block_swap(m, blocks_on_device=0, slots=2)  # block-swap
        assert held_bytes(m) <= swapped_held() + slack
        assert torch.equal(m(*inputs(2)), plain)
        remove_block_swap(m)  # offload-for-decode+tiled-decode
        assert held_bytes(m) <= whole + slack
        generation_with_offload()
        assert held_bytes(m) <= whole + slack
        assert torch.equal(m(*inputs(2)), plain)
