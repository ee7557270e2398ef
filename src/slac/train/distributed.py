"""Distributed training through ``torchrun``: process group, device, batch-norm synchronisation, reductions.

    torchrun --nproc_per_node=8 -m slac.cli train --config configs/table1/resnet20_cifar10_slac_ann.yaml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 -m slac.cli train ...

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``init_distributed`` joins the group (NCCL on CUDA,
gloo on the CPU) and pins each process to GPU ``LOCAL_RANK``. The global batch of the recipe is split
evenly: each process takes every ``world_size``-th image of every global batch, so the union of the
shards is the batch one process would see, and DistributedDataParallel's gradient average equals the
gradient of the combined batch (exactly, when the batch divides evenly). Adder gradient scaling runs
after the all-reduce (``scale_adder_grads`` between backward and step), so it sees the synchronised
gradient.

Batch normalisation normalises each process's shard with its own statistics unless ``sync_batchnorm``
is on. ``torch.nn.SyncBatchNorm`` only runs on GPUs; on the CPU (gloo) the same computation is done by
``DistributedBatchNorm`` below: the per-channel sums are all-reduced by an autograd function whose
backward all-reduces their gradients too, as SyncBatchNorm's does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from slac.errors import DeviceError

__all__ = [
    "Distributed",
    "DistributedBatchNorm",
    "convert_sync_batchnorm",
    "init_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the run: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum of ``tensor`` over processes (the tensor itself when not distributed)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda (this process's GPU) when visible, else cpu; "cuda" without an index -> LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: no CUDA device is visible to torch (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device}: only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(device)
    return device


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns the context and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank), device


def shutdown_distributed(clean: bool = True) -> None:
    """Leave the process group. ``clean``: every process got here without an error, so they first wait for
    each other; a process that tears down gloo while a peer still uses its connections can abort the peer
    ("terminate called without an active exception", seen in two-process runs without the barrier;
    BENCHMARKS.md, "Figures behind design choices").
    After an error the barrier is skipped: the other processes may be waiting in another collective."""
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """y = sum over processes of x; the gradient of every process's x is the sum of all processes'
    gradients of y (each y feeds every process's loss)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the union of every process's batch; any device, any backend (gloo).

    Training: mean and biased variance of each channel over all processes (two all-reduces: the sums,
    then the squared deviations from the global mean, which keeps the variance accurate for the large
    offsets of adder-layer outputs); running statistics as ``nn.BatchNorm`` updates them (unbiased
    variance). Evaluation, or no process group: plain batch normalisation.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        output_dtype = input.dtype
        # The CPU's own batch norm accumulates float32 statistics in float64 (at::acc_type); so does this
        # one on the CPU. ANN layers' outputs sit far from zero compared with their spread, and accumulated
        # in float32 their gradients visibly differed from nn.BatchNorm2d's (BENCHMARKS.md, "Figures behind
        # design choices"; docs/DESIGN.md, "Statistics in float64 on the CPU").
        if input.device.type == "cpu" and input.dtype in (torch.float32, torch.bfloat16, torch.float16):
            input = input.double()
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // channels], dtype=input.dtype, device=input.device)
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))  # (C + 1,)
        total = sums[-1]
        mean = sums[:channels] / total  # (C,)
        centered = input - mean.view(shape)
        variance = _AllReduceSum.apply(centered.square().sum(dims)) / total  # (C,), biased
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        output = output.to(output_dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=factor
                )
                self.running_var.mul_(1 - factor).add_(
                    unbiased.detach().to(self.running_var.dtype), alpha=factor
                )
        return output


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised over processes: torch's SyncBatchNorm on CUDA,
    ``DistributedBatchNorm`` elsewhere. Parameters and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, DistributedBatchNorm):
        converted = DistributedBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        reference = module.running_mean if module.running_mean is not None else module.weight
        if reference is not None:
            converted = converted.to(reference.device, reference.dtype)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        if module.affine:
            converted.weight.requires_grad_(module.weight.requires_grad)
            converted.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, device))
    return converted
