"""Hand-written Triton kernels for inference on a GPU, used by flashi2v.fast_path.fusion (the model itself stays
plain PyTorch). Each computes what the plain ops it replaces compute, in float32 with one rounding at
the end as torch.compile's fusion of those ops does, in one pass over memory where that fusion rereads
its inputs."""

import importlib.util


def triton_available() -> bool:
    """True when triton is importable (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None
