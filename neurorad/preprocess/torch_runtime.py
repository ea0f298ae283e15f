"""CPU runtime settings shared by every torch network neurorad runs (brain extraction, the segment layer).

Denormal (subnormal) floats: 3D networks applied to real heads produce many activations near zero
(the air around the head is constant, and after normalisation and several convolutions its
activations decay into the subnormal range). x86 CPUs handle subnormals in microcode, tens of times
slower than normal floats. Measured here: HD-BET (one fold, no mirroring) on Colin27 took 122 s
with flushing and was still running after 360 s without (same machine, same load).

The flag (MXCSR flush-to-zero / denormals-are-zero, ``torch.set_flush_denormal``) belongs to the
calling thread and is copied by threads it starts, such as torch's OpenMP workers. It also changes
numpy and scipy on that thread: an exact test summing tiny probabilities returned p = 0 or 1 where
edgeR gives 0.13-0.60. So it is only ever on *during* a network's forward passes
(:func:`denormals_flushed`), never left on for the science that follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush subnormal floats to zero on this thread for the ``with`` block (torch inference or training).

    Yields whether the CPU supports it. Threads started inside the block (torch's OpenMP pool on its
    first parallel operation) keep the setting; they only run torch kernels.
    """
    import torch

    supported = bool(torch.set_flush_denormal(True))
    try:
        yield supported
    finally:
        torch.set_flush_denormal(False)
