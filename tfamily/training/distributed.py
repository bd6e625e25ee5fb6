"""Data parallelism on PyTorch's own engine, for the one trainer, under ``torchrun``.

    torchrun --nproc-per-node 4 -m tfamily.cli train --config configs/x.yaml          # one machine
    torchrun --nnodes 2 --node-rank 0 --rdzv-endpoint host:29500 --nproc-per-node 8 \\
             -m tfamily.cli train ...                                                  # several

``torchrun`` starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK;
``from_env`` reads them and joins the process group (NCCL on GPUs, gloo on CPUs). The model
is wrapped in DDP (a full copy per rank, gradients averaged after backward) or, with
``parallel: fsdp``, sharded with FSDP2's ``fully_shard`` (each rank holds a slice of every
weight and of the optimizer state). Every rank draws its own rows of the same global batch,
so the batch size in the config is the global one whatever the number of processes.
Only rank 0 logs, shows the progress bar and writes checkpoints; checkpoints hold full
(unsharded) weights and optimizer state, so a run resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def from_env(device: str = "auto") -> DistContext:
    """The context torchrun describes in the environment (one process without it), with the
    process group joined: NCCL when this process has a GPU to use, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return ctx


def device_for(ctx: DistContext, name: str) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) when on CUDA."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return torch.device(name)


def wrap(model: nn.Module, ctx: DistContext, mode: str, device: torch.device) -> nn.Module:
    """DDP around the model, or FSDP2 sharding of each transformer block and then the whole
    (in place: the model's parameters become sharded DTensors). One process: the model."""
    if not ctx.enabled:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from ..nn.block import Block
        for block in [m for m in model.modules() if isinstance(m, Block)]:
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"unknown parallel mode {mode!r}; choose ddp or fsdp")


def no_sync(wrapped: nn.Module, ctx: DistContext, mode: str, last: bool):
    """Skip the gradient all-reduce on every micro-batch but the last of a step: the
    gradients add up locally and are averaged across ranks once."""
    if not ctx.enabled or last:
        return contextlib.nullcontext()
    if mode == "ddp":
        return wrapped.no_sync()
    return _fsdp_no_sync(wrapped)


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_reduce_sum(value: float, ctx: DistContext, device: torch.device) -> float:
    """The sum of ``value`` over all ranks (itself with one process)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def finish(ctx: DistContext, code: int = 0) -> None:
    """Leave the process group and end the process.

    With gloo on CPU (torch 2.13), a process that has destroyed its process group aborts at
    interpreter exit about half the time ("terminate called without an active exception",
    exit -6) although all its work is done: a gloo thread is still torn down during
    interpreter finalisation. So a distributed worker flushes its output and leaves with
    ``os._exit`` right after the teardown, which skips that finalisation; every file it
    wrote is already closed. Single-process runs return normally.
    """
    if not ctx.enabled or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def all_reduce_max(value: float, ctx: DistContext, device: torch.device) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_rng_states(ctx: DistContext) -> dict[str, torch.Tensor]:
    """Every rank's CPU RNG state as ``rng.torch.<rank>`` (collected on rank 0), so that
    dropout continues exactly when a run resumes on the same number of processes."""
    state = torch.get_rng_state()
    if not ctx.enabled:
        return {"rng.torch.0": state}
    states = [None] * ctx.world_size
    dist.all_gather_object(states, state)
    return {f"rng.torch.{r}": s for r, s in enumerate(states)}


def full_fsdp_state(model: nn.Module, optimizers: list, cfg, ctx: DistContext):
    """(plain model with the full weights, flat optimizer tensors, param groups) gathered from
    the shards; a collective every rank joins, whose result only rank 0 uses.

    Optimizer state is keyed by parameter name (``optim.<i>.<key>::<name>``), not by the
    positional ids a single-process state dict uses, because that is what
    ``set_optimizer_state_dict`` needs to reshard it for any number of ranks on resume."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    from ..models import model_from_state_dict
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full)
    tensors, groups = {}, []
    for i, opt in enumerate(optimizers):
        osd = get_optimizer_state_dict(model, opt, options=full)  # empty on ranks other than 0
        for name, st in osd.get("state", {}).items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{i}.{key}::{name}"] = value
        groups.append(osd.get("param_groups", []))
    # own storage per tensor: the gathered tensors may be views of one buffer, which the
    # safetensors writer (rightly) refuses to save as separate weights
    plain = model_from_state_dict(cfg, {k: v.clone() for k, v in weights.items()}) if ctx.is_main else None
    return plain, tensors, groups


def load_full_fsdp_state(model: nn.Module, optimizers: list, path, tensors: dict, groups: list) -> None:
    """Install full weights and optimizer state (as ``full_fsdp_state`` wrote them) into a
    sharded model, each rank keeping its own slices."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    from ..checkpoint import WEIGHTS
    full = StateDictOptions(full_state_dict=True)
    weights = load_file(str(path / WEIGHTS))
    if getattr(model, "cfg", None) is not None and model.cfg.tie_embeddings:
        weights = {k: v for k, v in weights.items() if k in model.state_dict()}
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    for i, opt in enumerate(optimizers):
        state: dict[str, dict[str, torch.Tensor]] = {}
        prefix = f"optim.{i}."
        for key, value in tensors.items():
            if key.startswith(prefix) and "::" in key:
                field, name = key[len(prefix):].split("::", 1)
                state.setdefault(name, {})[field] = value
        set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups[i]}, options=full)
