"""The fixed evaluation noise of the validation batches: the same draws at every evaluation, on every device.

Successive validation losses decide convergence, so they must differ only by the model: each batch's
reparametrisation noise is drawn from a generator seeded with ``seed + batch index``. The draws are made by
the CPU generator and moved to the batch's device (a CUDA generator draws other numbers), so a validation loss,
and the decisions taken on it, do not depend on where a job runs. Drawn once and kept, up to ``CACHE_BYTES`` in
all (on a GPU up to ``CACHE_GPU_SHARE`` of its memory); what is not kept is drawn again at each evaluation.
"""

from __future__ import annotations

import torch

CACHE_BYTES = 512 * 2**20
CACHE_GPU_SHARE = 0.1  # E = 121 members x 71,377 validation cells: 1.1 GB
SEED = 987654


class FixedNoise:
    def __init__(self, seed: int = SEED) -> None:
        self.seed = seed
        self.cache: dict[int, torch.Tensor] = {}

    def get(self, shape: tuple[int, ...], batch_idx: int, device: torch.device) -> torch.Tensor:
        """(E, rows, L) standard normal draws of batch ``batch_idx`` on ``device``."""
        cached = self.cache.get(batch_idx)
        if cached is not None and tuple(cached.shape) == tuple(shape) and cached.device == device:
            return cached
        # another shape or device (new data, moved model): drawn again, nothing kept for another device
        self.cache = {k: v for k, v in self.cache.items() if k != batch_idx and v.device == device}
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed + batch_idx)).to(device)
        held = sum(t.numel() * t.element_size() for t in self.cache.values())
        if held + noise.numel() * noise.element_size() <= _cache_bytes(device):
            self.cache[batch_idx] = noise
        return noise

    def clear(self) -> None:
        self.cache.clear()


def _cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return max(CACHE_BYTES, int(CACHE_GPU_SHARE * torch.cuda.get_device_properties(device).total_memory))
    return CACHE_BYTES
