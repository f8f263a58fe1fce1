"""CPU thread control for code made of many small torch ops."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_torch_thread():
    """Run the block with one intra-op thread, restoring the setting afterwards.

    On small tensors torch's thread pool costs more than it saves (rendering clips and the motion
    searches ran many times slower with 2 threads on a busy machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
