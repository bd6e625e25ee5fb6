"""Optimizers: AdamW, or Muon for the hidden matrices with AdamW for the rest.

The trainer holds a list of optimizers and steps each; checkpoints store every one's
moments as flat tensors (safetensors) and their param groups as JSON.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.block import Stack
from .config import TrainConfig


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the linear layers inside the Transformer stacks (attention and MLP).

    Embeddings, the LM head, norms and biases are not "hidden matrices": Muon's
    orthogonalised update suits only the 2-D maps between hidden states.
    """
    found = {}
    for stack in (m for m in model.modules() if isinstance(m, Stack)):
        for layer in stack.modules():
            if isinstance(layer, nn.Linear) and layer.weight.requires_grad:
                found[id(layer.weight)] = layer.weight
    return list(found.values())


def _adamw(params: list[nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """Weight decay on matrices only. ``fused=True`` runs the update as one kernel: about 6x
    faster than the default for-each implementation on this CPU, and the norm on GPUs."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cpu", "cuda"))


def make_optimizers(model: nn.Module, cfg: TrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    """``adamw``: one AdamW. ``muon``: torch.optim.Muon (momentum orthogonalised by Newton-Schulz,
    Jordan et al. 2024) on the hidden matrices, with its learning rate rescaled to match
    AdamW's update RMS (Liu et al. 2025, "Muon is Scalable for LLM Training"), so one ``lr``
    serves both; AdamW on everything else."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return [_adamw(params, cfg, device)]
    if not hasattr(torch.optim, "Muon"):
        raise ValueError(f"optimizer 'muon' needs torch >= 2.9 (this is {torch.__version__}); use optimizer 'adamw'")
    hidden = hidden_matrices(model)
    if not hidden:  # e.g. LoRA: the hidden matrices are frozen and only the small factors train
        return [_adamw(params, cfg, device)]
    hidden_ids = {id(p) for p in hidden}
    rest = [p for p in params if id(p) not in hidden_ids]
    muon = torch.optim.Muon(hidden, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                            adjust_lr_fn="match_rms_adamw")
    return [_adamw(rest, cfg, device), muon]


def optimizers_to_tensors(opts: list[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list[list[dict]]]:
    """Flat tensors ``optim.<i>.<param>.<key>`` and, per optimizer, its JSON param groups."""
    tensors, groups = {}, []
    for i, opt in enumerate(opts):
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{i}.{pid}.{key}"] = value
        groups.append(sd["param_groups"])
    return tensors, groups


def optimizers_from_tensors(opts: list[torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                            groups: list[list[dict]]) -> None:
    if len(groups) != len(opts):
        raise ValueError(f"checkpoint has {len(groups)} optimizer(s), this run builds {len(opts)}; "
                         "was it trained with another --optimizer?")
    states: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in opts]
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, i, pid, key = name.split(".", 3)
            states[int(i)].setdefault(int(pid), {})[key] = value
    for opt, state, g in zip(opts, states, groups):
        opt.load_state_dict({"state": state, "param_groups": g})
