"""Adam over ONE flat parameter buffer, with a learning rate per range of ensemble members.

Why: for these small models the optimizer's per-tensor Python and kernel-launch overhead, not its arithmetic,
is most of its cost (docs/performance.md). At construction the given parameters are re-pointed (``p.data``)
to views of one contiguous buffer, which is the optimizer's only parameter, and a flat gradient buffer of the
same layout is allocated. Two ways to supply the gradient:

- ``step()`` after ``loss.backward()``: the parameters' ``.grad`` are gathered into the buffer (one ``cat``);
- ``step_flat()`` / ``step_members()`` after writing the gradient of every parameter into ``grad_view(p)``
  (the hand-written backward pass of ``elbo_grad``; no gathering, no ``.grad`` tensors).

Either way the update is ``torch.optim.Adam(fused=True)``'s kernel and rule (lr, betas, eps, bias correction; no
weight decay). Adam is elementwise, so members of an ensemble stay independent. Every parameter of an ensemble
VAE has the member as its leading dimension, so the rows ``[a, b)`` of every parameter are one member range:
``step_members`` updates only the given ranges, each with its own learning rate (members whose lr was annealed,
members frozen after convergence are simply not in any range). The state (``step``, ``exp_avg``,
``exp_avg_sq``) is Adam's, for the flat buffer; ``step`` counts updates of the buffer, which every member still
training has received. Create the optimizer after the model is on its device.

Measured gain (issue 21 item 10, ``make bench-optimizer``, docs/performance.md "The optimizer step"): against
the public way to get per-member learning rates and freezing, ``torch.optim.Adam`` with one parameter group per
member, the step is 3-60x faster than ``fused=True`` (10-210x than ``foreach=True``) on the CPU, one thread;
with the hand-written gradient it is 7-11% of a whole training update (mlp-d4 at E = 1, 16, 31 and the linear
model at E = 31; the step itself is 0.1-5% of an update). It is also what the published results were trained
with: the public optimizer follows the same rule but not the same bits (the parameters part in the last float32
bits from the second update on, 6e-7 after 300 updates of the CI preset's linear model), so replacing it would
change the trained numbers.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch


class FusedAdam(torch.optim.Adam):
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float) -> None:
        views = [p for p in params if p.requires_grad]
        if not views:
            raise ValueError("FusedAdam: no trainable parameters")
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in views])
        grad = torch.zeros_like(flat)
        self._grad_views: dict[int, torch.Tensor] = {}
        self._slices: list[tuple[int, int, torch.Size]] = []
        self._row_views: dict[tuple[int, int], tuple[tuple[int, ...], list[list[torch.Tensor]]]] = {}
        offset = 0
        for p in views:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            self._grad_views[id(p)] = grad[offset : offset + n].view_as(p)
            self._slices.append((offset, n, p.shape))
            offset += n
        self._members = views[0].shape[0] if views[0].dim() else 1  # leading dimension = ensemble member
        flat = torch.nn.Parameter(flat)
        super().__init__([flat], lr=lr, fused=True)
        self.flat, self.views, self.flat_grad = flat, views, grad

    def grad_view(self, p: torch.nn.Parameter) -> torch.Tensor:
        """The slice of the flat gradient buffer that holds ``p``'s gradient (shape of ``p``)."""
        return self._grad_views[id(p)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears the model parameters' gradients (not only the flat buffer's)."""
        for p in self.views:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()
        self.flat.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for p in self.views]
        if any(g is None for g in grads):
            missing = sum(g is None for g in grads)
            raise RuntimeError(f"FusedAdam: {missing} parameter(s) without a gradient at this step")
        torch.cat([g.reshape(-1) for g in grads], out=self.flat_grad)
        self.step_flat()
        return loss

    @torch.no_grad()
    def step_flat(self) -> None:
        """One update of every parameter, with the gradient already written into the ``grad_view``s."""
        self.step_members(None)

    @torch.no_grad()
    def step_members(self, ranges: Sequence[tuple[int, int, float]] | None) -> None:
        """One update of the member rows ``[a, b)`` of every parameter at learning rate ``lr``, for each
        ``(a, b, lr)`` in ``ranges`` (``None``: every row, at the group's lr). Rows in no range are unchanged."""
        self.flat.grad = self.flat_grad
        group = self.param_groups[0]
        state = self.state[self.flat]
        if not state or torch.is_tensor(group["lr"]) or group["amsgrad"] or group["weight_decay"] or group["maximize"]:
            if ranges is not None and not state:  # create Adam's state exactly as Adam(fused=True) does, no update
                state["step"] = torch.zeros((), dtype=torch.float32, device=self.flat.device)
                state["exp_avg"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(self.flat, memory_format=torch.preserve_format)
            else:
                super().step()  # first step of a full update: Adam(fused=True) itself
                return
        state["step"].add_(1)
        buffers = (self.flat, self.flat_grad, state["exp_avg"], state["exp_avg_sq"])
        for a, b, lr in ranges if ranges is not None else [(0, None, group["lr"])]:
            whole = a == 0 and (b is None or b == self._members)
            self._fused(*([[t] for t in buffers] if whole else self._rows(buffers, a, b)), state["step"], lr)

    def _rows(self, buffers: tuple[torch.Tensor, ...], a: int, b: int) -> list[list[torch.Tensor]]:
        """Rows [a, b) (members) of every parameter, as views of each of ``buffers`` (flat buffers of this
        layout). Cached per range: building the views cost more than the update of a small range
        (benchmarks/optimizer_step.py); a new buffer (a loaded state) has another address and is viewed afresh
        (the cached views keep the old storage alive, so its address cannot be reused while cached)."""
        key, ptrs = (a, b), tuple(t.data_ptr() for t in buffers)
        hit = self._row_views.get(key)
        if hit is None or hit[0] != ptrs:
            if len(self._row_views) >= 1024:  # ranges change as members anneal and freeze: bounded
                self._row_views.clear()
            hit = self._row_views[key] = (ptrs, [[t[off : off + n].view(shape)[a:b] for off, n, shape in self._slices]
                                                 for t in buffers])
        return hit[1]

    def _fused(self, params, grads, exp_avgs, exp_avg_sqs, step: torch.Tensor, lr: float) -> None:
        beta1, beta2 = self.param_groups[0]["betas"]
        torch._fused_adam_(
            params, grads, exp_avgs, exp_avg_sqs, [], [step] * len(params), amsgrad=False, lr=lr, beta1=beta1,
            beta2=beta2, weight_decay=0.0, eps=self.param_groups[0]["eps"], maximize=False, grad_scale=None,
            found_inf=None,
        )
