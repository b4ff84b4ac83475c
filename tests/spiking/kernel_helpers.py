"""Helpers shared by the kernel tests (fused eager and C++ against the reference)."""

import torch


def run(fn, x, decay, spec, grad_s, grad_h, learn):
    """Spikes, membrane and gradients (x, and decay when ``learn``) of one kernel
    (a gradient is ``None`` where the kernel's output does not depend on that input)."""
    x = x.clone().requires_grad_()
    k = torch.tensor(decay, dtype=x.dtype, requires_grad=True) if learn else decay
    spikes, mem = fn(x, k, spec)
    loss = 0.0
    if grad_s is not None:
        loss = loss + (spikes * grad_s).sum()
    if grad_h is not None:
        loss = loss + (mem * grad_h).sum()
    inputs = [x, k] if learn else [x]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return spikes, mem, grads
