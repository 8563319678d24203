"""PyTorch's fast path: `torch.nn.functional.batch_norm` (cuDNN on a GPU).

It computes the same normalization in one kernel forward and one backward.
Two conventions differ from Keras, and the layer keeps Keras' for its moving
statistics: PyTorch's running variance is the unbiased one (divide by m - 1)
and its momentum weighs the new batch. So we hand the kernel scratch running
statistics and momentum 1.0, which makes them exactly the batch's mean and
unbiased variance, rescale the variance by (m - 1)/m, and let the layer
update its own moving averages with Keras' formula.

The kernel sees the input shifted by one sample per channel (BN's output
does not change), which keeps it exact for constant inputs and accurate
for inputs far from zero, where the unshifted kernel's error reached 10 to
300 times Keras' on CPU.

Channels-last inputs are handed over as views, never copied: a 4-D or 5-D
tensor as (N, C, ...) in channels-last memory, which PyTorch's kernels read
natively, any other rank as an (M, C) matrix. PyTorch refuses training with
a single value per channel (a batch of one 2-D example), which then takes the
layer's general path.

Replicas: the processes of the default `torch.distributed` group (gloo on CPUs, NCCL
on GPUs), e.g. started by `torchrun` or `torch.multiprocessing` and wrapped in
DistributedDataParallel. A synchronized layer sums its counts, sums and squared
deviations over them with `_SumOverProcesses`, an all-reduce that autograd sees: its
gradient is the all-reduce of the incoming gradients, so each process's backward
pass carries every process's share of d(loss)/d(statistics), the math of PyTorch's
SyncBatchNorm (which runs on GPUs only). A plain `dist.all_reduce` would be
invisible to autograd and leave each process with its own share only.
"""

from __future__ import annotations

import keras
import torch
import torch.nn.functional as F

_FAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TorchBackend:
    """PyTorch: `torch.nn.functional.batch_norm`; replicas are the processes of the
    default torch.distributed group."""

    name = "torch"

    def kernel(self, x, channel_axis: int, epsilon: float, training: bool):
        rank = x.dim()
        if rank < 2 or channel_axis not in (1, rank - 1) or x.dtype not in _FAST_DTYPES:
            return None
        if training and x.numel() <= x.shape[channel_axis]:
            return None  # PyTorch refuses training with one value per channel
        return KERNEL

    def replicas_in_sync(self) -> int:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return torch.distributed.get_world_size() if distributed else 1

    def sum_over_replicas(self, t):
        if self.replicas_in_sync() == 1:
            return t
        return _SumOverProcesses.apply(t)


class _SumOverProcesses(torch.autograd.Function):
    """`t` summed over the default process group, differentiable: the gradient of each
    process's input is the sum of every process's gradient of the output.

    torch.distributed.nn.functional.all_reduce computes the same, but PyTorch 2.14
    deprecates it with a FutureWarning at each call, pointing to a private module."""

    @staticmethod
    def forward(ctx, t):
        total = t.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return total


class _Kernel:
    def batch_norm(self, x, gamma, beta, epsilon, channel_axis):
        view, restore = _channels_second(x.float(), channel_axis)
        channels = view.shape[1]
        # BN(x) == BN(x - s) for any per-channel constant s. With s one sample per channel
        # the kernel's sums stay small: exact for constant inputs, accurate far from zero
        # (unshifted, its error there was 10 to 300 times Keras').
        shift = view[(slice(0, 1), slice(None)) + (slice(0, 1),) * (view.dim() - 2)].detach()
        shifted_mean = view.new_zeros(channels)
        unbiased_variance = view.new_zeros(channels)
        y = F.batch_norm(view - shift, shifted_mean, unbiased_variance, _tensor(gamma),
                         _tensor(beta), training=True, momentum=1.0, eps=epsilon)
        m = view.numel() // channels
        return restore(y), shift.reshape(-1) + shifted_mean, unbiased_variance * ((m - 1) / m)

    def normalize(self, x, mean, variance, gamma, beta, epsilon, channel_axis):
        view, restore = _channels_second(x.float(), channel_axis)
        # The kernel computes x * a + (beta - mean * a), which loses the digits of x - mean
        # when |mean| is large against the spread; centering first keeps them.
        mean = _tensor(mean)
        centered = view - mean.reshape((1, -1) + (1,) * (view.dim() - 2))
        y = F.batch_norm(centered, torch.zeros_like(mean), _tensor(variance), _tensor(gamma),
                         _tensor(beta), training=False, eps=epsilon)
        return restore(y)


KERNEL = _Kernel()
BACKEND = TorchBackend()


def _channels_second(x, channel_axis):
    """x as PyTorch's (N, C, ...) layout, and the function that undoes the view."""
    rank = x.dim()
    if channel_axis == 1 or rank == 2:
        return x, lambda y: y
    if rank in (4, 5):
        return x.movedim(-1, 1), lambda y: y.movedim(1, -1)
    shape = x.shape
    return x.reshape(-1, shape[-1]), lambda y: y.reshape(shape)


def _tensor(v):
    return None if v is None else keras.ops.convert_to_tensor(v)
