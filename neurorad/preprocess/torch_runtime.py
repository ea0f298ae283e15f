"""CPU runtime settings shared by every torch network neurorad runs (brain extraction, the segment layer).

Denormal (subnormal) floats: 3D networks applied to real heads produce many activations near zero
(the air around the head is constant, and after normalisation and several convolutions its
activations decay into the subnormal range). x86 CPUs handle subnormals in microcode, tens of times
slower than normal floats. Measured here: HD-BET (one fold, no mirroring) on Colin27 took 122 s
with flushing and was still running after 360 s without (same machine, same load). Flushing
subnormals to zero changes outputs by less than 1e-38 per value, far below any network's
tolerance; PyTorch exposes it as ``torch.set_flush_denormal`` (per calling thread, SSE3 needed).
"""

from __future__ import annotations


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this thread; returns whether the CPU supports it."""
    import torch

    return bool(torch.set_flush_denormal(True))
