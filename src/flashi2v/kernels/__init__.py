"""Hand-written Triton kernels for inference on a GPU, used by flashi2v.optimize (the model itself stays
plain PyTorch). Each computes what the plain ops it replaces compute, in float32 with one rounding at
the end as torch.compile's fusion of those ops does, in one pass over memory where that fusion rereads
its inputs."""

import importlib.util


def triton_available() -> bool:
    """True when triton is importable (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


_row_pieces = True


def set_row_pieces(enabled: bool) -> None:
    """Process-wide, read at each launch; for benchmarks: ``False`` lays each row out as one block padded to
    a power of two, as the kernels did before (1,536 -> 2,048)."""
    global _row_pieces
    _row_pieces = bool(enabled)


def row_pieces(dim: int) -> tuple[int, int]:
    """A row of ``dim`` values as two power-of-two blocks (a, b), a >= b, b = 0 when dim is a power of two:
    1,536 -> (1,024, 512). Triton blocks have power-of-two sizes; one block of next_power_of_2(dim) would
    leave the threads of its padding idle. b is rounded up (masked) when dim - a is not a power of two."""
    if not _row_pieces:
        return 1 << (dim - 1).bit_length(), 0
    a = 1 << (dim.bit_length() - 1)
    rest = dim - a
    return a, (1 << (rest - 1).bit_length()) if rest else 0
