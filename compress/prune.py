"""Pruning: unstructured masks (the tutorial's, which shrink nothing) and real channel removal.

A channel-pruned model is stored as its Torch-Pruning history plus a state dict: replaying the
history on a fresh ResNet18 rebuilds the exact architecture, so no pickled module is ever loaded.
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune


def _convs(model: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def l1_unstructured(model: torch.nn.Module, amount: float, include_fc: bool = True) -> torch.nn.Module:
    """Zero the ``amount`` smallest |w| of every conv (and the fc), then make the masks permanent."""
    targets = _convs(model) + ([model.fc] if include_fc else [])
    for m in targets:
        tprune.l1_unstructured(m, name="weight", amount=amount)
        tprune.remove(m, "weight")
    return model


def global_l1_unstructured(model: torch.nn.Module, amount: float) -> torch.nn.Module:
    """Zero the ``amount`` smallest |w| across all convs together (layers lose different shares)."""
    params = [(m, "weight") for m in _convs(model)]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    for m, name in params:
        tprune.remove(m, name)
    return model


def _dependency_graph(model: torch.nn.Module, input_size: tuple[int, int]):
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, *input_size))


def channel_prune(model: torch.nn.Module, ratio: float, input_size: tuple[int, int],
                  round_to: int = 8, stage_ratios: dict[str, float] | None = None) -> list:
    """Remove ``ratio`` of the channels of every prunable layer (L1 magnitude, dependency-aware:
    residual additions keep matching widths). Returns the replayable pruning history.

    ``stage_ratios`` overrides the ratio for named submodules (e.g. ``{"layer4": 0.6}``).
    ``round_to=8`` keeps channel counts at multiples of 8, which int8/fp32 GEMM kernels prefer."""
    import torch_pruning as tp

    model.eval()
    per_module = {model.get_submodule(name): r for name, r in (stage_ratios or {}).items()}
    pruner = tp.pruner.MagnitudePruner(
        model, torch.zeros(1, 3, *input_size),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, pruning_ratio_dict=per_module or None, ignored_layers=[model.fc], round_to=round_to,
    )
    pruner.step()
    return _jsonable(pruner.pruning_history())


def replay_channel_prune(model: torch.nn.Module, history: list, input_size: tuple[int, int]) -> torch.nn.Module:
    _dependency_graph(model, input_size).load_pruning_history(history)
    return model


def _jsonable(history: list) -> list:
    return [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in history]
