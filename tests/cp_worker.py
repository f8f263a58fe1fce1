"""Run under torchrun (2 processes, gloo): generation with Ulysses context parallel vs without."""

import json
import sys

import torch
import torch.distributed as dist

from flashi2v.context_parallel import apply_context_parallel
from flashi2v.random_components import random_tiny_pipeline

dist.init_process_group("gloo")
image = sys.argv[2]
pipe = random_tiny_pipeline(seed=0)
with torch.no_grad():
    for p in pipe.transformer.parameters():  # all weights random and non-zero, identical on both ranks
        p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
settings = dict(num_frames=9, height=32, width=64, steps=4, seed=0, progress=False, output_type="latent")
plain = pipe(image, "the camera pans left", **settings).latents
apply_context_parallel(pipe.transformer)
parallel = pipe(image, "the camera pans left", **settings).latents
if dist.get_rank() == 0:
    err = ((parallel - plain).norm() / plain.norm()).item()
    with open(sys.argv[1], "w") as f:
        json.dump({"rel_err": err, "norm": plain.norm().item()}, f)
dist.destroy_process_group()
