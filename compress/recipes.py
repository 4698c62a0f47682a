"""The built-in variants, registered when ``compress`` is imported.

Each apply function takes the parent's float model, the build context and its own recipe, and
returns (model, facts); facts go into the manifest (pruning history, fine-tune, calibration).
"""
from __future__ import annotations

import copy
import re
from dataclasses import replace

from . import prune, quantize
from .errors import UserError
from .registry import Finetune, Kind, Recipe, WeightsFormat, register, register_family, register_recipe
from .train import TrainConfig, recalibrate_bn, train

TUTORIAL_ORIGIN = "beyond the tutorial"


@register_recipe(name="fp32", kind=Kind.FLOAT, summary="the trained checkpoint, unchanged", origin="tutorial §2",
                 parent=None)
def unchanged(model, ctx, recipe):
    return model, {}


@register_recipe(name="prune-l1-20", kind=Kind.FLOAT,
                 summary="L1 unstructured, 20% of every conv and the fc, masks made permanent",
                 origin="tutorial §3.1", parent="fp32", params={"amount": 0.2, "include_fc": True})
def l1_unstructured(model, ctx, recipe):
    p = recipe.params
    return prune.l1_unstructured(copy.deepcopy(model), p["amount"], include_fc=p["include_fc"]), {}


@register_recipe(name="prune-global-30", kind=Kind.FLOAT, summary="global L1 unstructured, 30% across all convs",
                 origin="tutorial §3.2", parent="fp32", params={"amount": 0.3})
def global_l1_unstructured(model, ctx, recipe):
    return prune.global_l1_unstructured(copy.deepcopy(model), recipe.params["amount"]), {}


def channel_prune(model, ctx, recipe):
    """Remove channels (Torch-Pruning), recalibrate BN, then fine-tune with distillation from the parent."""
    p, ft = recipe.params, recipe.finetune
    pruned = copy.deepcopy(model)
    history = prune.channel_prune(pruned, p["ratio"], ctx.card.input_size, round_to=p["round_to"],
                                  stage_ratios=p.get("stage_ratios"))
    data = ctx.dataset.finetune_split(ctx.finetune_samples)
    recalibrate_bn(pruned, data, ctx.card)
    # An explicit --finetune-epochs is taken literally (also below the recipe's minimum steps).
    override = ctx.finetune_epochs is not None
    epochs = ctx.finetune_epochs if override else ft.epochs
    facts = {"pruning_history": history, "finetune": None}
    if epochs > 0:
        budget = f", at most {ctx.finetune_minutes:g} min" if ctx.finetune_minutes is not None else ""
        ctx.log(f"  fine-tuning {recipe.name} for {epochs} epochs on train ({len(data)} images{budget})")
        cfg = TrainConfig(epochs=epochs, min_steps=0 if override else ft.min_steps, lr=ft.lr,
                          distill_weight=ft.distill_weight, batch_size=ft.batch_size,
                          warmup_fraction=ft.warmup_fraction, augment=ft.augment,
                          max_seconds=None if ctx.finetune_minutes is None else 60 * ctx.finetune_minutes)
        facts["finetune"] = train(pruned, data, ctx.card, cfg, device=ctx.train_device,
                                  teacher=model, log=ctx.log)
    return pruned, facts


@register_recipe(name="int8-dynamic", kind=Kind.INT8, summary="quantize_dynamic on nn.Linear (only the fc in ResNet18)",
                 origin="tutorial §4.1", parent="fp32", params={"modules": ["Linear"], "dtype": "qint8"},
                 weights_format=WeightsFormat.TORCH_INT8_DYNAMIC, backend=quantize.host_backend())
def dynamic_int8(model, ctx, recipe):
    # Packed Linear weights belong to the engine selected when they are packed: pin it.
    quantize.set_engine(recipe.backend)
    return quantize.quantize_dynamic_linear(model), {}


def static_int8(model, ctx, recipe):
    calib = ctx.calibration_split()
    q = quantize.quantize_static(model, calib, ctx.card, backend=recipe.backend)
    return q, {"calibration": ctx.calibration_info(calib)}


# Static int8 as the tutorial's §4.2 describes it, for the x86 engine.
STATIC_INT8 = Recipe(name="int8-static", kind=Kind.INT8,
                     summary="static int8 PTQ: conv-bn-relu fused, per-channel weights, calibrated",
                     origin="tutorial §4.2", parent="fp32", apply=static_int8,
                     params={"per_channel": True, "fuse": "conv-bn-relu", "observer": "histogram (activations)"},
                     weights_format=WeightsFormat.TORCH_INT8_STATIC, calibrates=True, backend="x86", devices=("x86",))
register(STATIC_INT8)
register(replace(STATIC_INT8, name="int8-static-arm", origin="tutorial §4.2, ARM backend",
                 summary="static int8 PTQ for ARM (qnnpack backend, per-tensor weights)",
                 params={**STATIC_INT8.params, "per_channel": False}, backend="qnnpack", devices=("arm",)))



@register_recipe(name="fp16", kind=Kind.FP16, summary="half precision weights and activations",
                 origin=TUTORIAL_ORIGIN, parent="fp32", devices=("cuda",),
                 off_target="fp16 is a CUDA target: CPU runtimes here have no fast fp16 kernels")
def half(model, ctx, recipe):
    return quantize.to_fp16(model), {}


# The fine-tune every channel-pruned variant gets: 2 epochs of distillation from fp32
# (distillation only: 80.7% vs 80.1% with 30% hard labels at the same cost; docs/PERFORMANCE.md).
STRUCT_FINETUNE = Finetune(epochs=2.0, lr=0.02, min_steps=300, distill_weight=1.0)
STRUCT_SUMMARY = "BN recalibrated, fine-tuned with distillation from fp32"


def _channel_pruned(name: str, summary: str, params: dict) -> Recipe:
    return Recipe(name=name, kind=Kind.FLOAT, summary=f"{summary}, {STRUCT_SUMMARY}", origin=TUTORIAL_ORIGIN,
                  parent="fp32", apply=channel_prune, params={"round_to": 8, **params}, finetune=STRUCT_FINETUNE)


def _pruned_int8(parent: str, role: str) -> Recipe:
    """``<parent>+int8``: a channel-pruned variant, then static int8 (x86)."""
    return replace(STATIC_INT8, name=f"{parent}+int8", parent=parent, origin=TUTORIAL_ORIGIN,
                   summary=f"{parent} then static int8 (x86): {role}")


def _struct_recipe(m) -> Recipe:
    ratio = float(m.group(1))
    if not 0.0 < ratio < 1.0:
        raise UserError(f"prune-struct ratio must be between 0 and 1, got {m.group(1)}")
    return _channel_pruned(f"prune-struct-{m.group(1)}", f"{ratio:.0%} of channels removed (Torch-Pruning, L1, "
                           "round_to 8)", {"ratio": ratio})


def _struct_int8_recipe(m) -> Recipe:
    return _pruned_int8(f"prune-struct-{m.group(1)}", "the real edge target")


STRUCT, STRUCT_INT8 = r"prune-struct-(0\.\d+)", r"prune-struct-(0\.\d+)\+int8"
register_family(STRUCT, _struct_recipe)
register_family(STRUCT_INT8, _struct_int8_recipe)
register(_struct_recipe(re.fullmatch(STRUCT, "prune-struct-0.5")))
register(_struct_int8_recipe(re.fullmatch(STRUCT_INT8, "prune-struct-0.5+int8")))


def _stages_recipe(m) -> Recipe:
    """prune-stages-A-B-C-D: A of the channels of the stem and layer1 (one residual stream), B of
    layer2, C of layer3, D of layer4; the family ``python -m bench search`` explores."""
    ratios = [float(g) for g in m.groups()]
    if not all(0.0 <= r < 1.0 for r in ratios) or not any(ratios):
        raise UserError(f"prune-stages ratios must be from 0 to below 1 and not all 0, got {', '.join(m.groups())}")
    stages = {f"layer{i}": r for i, r in zip((2, 3, 4), ratios[1:]) if r != ratios[0]}
    return _channel_pruned(m.string, f"channels removed per stage (Torch-Pruning, L1, round_to 8): {ratios[0]:.0%} of "
                           f"stem and layer1, {ratios[1]:.0%} / {ratios[2]:.0%} / {ratios[3]:.0%} of layers 2 / 3 / 4",
                           {"ratio": ratios[0], "stage_ratios": stages})


STAGES = r"prune-stages-(0\.\d+)-(0\.\d+)-(0\.\d+)-(0\.\d+)"
register_family(STAGES, _stages_recipe)
register_family(STAGES + r"\+int8", lambda m: _pruned_int8(m.string.removesuffix("+int8"), "a searched edge target"))


# The frontier allocation: 20% of the stem and layer1, 30% of layers 2 and 3, 90% of layer4.
# `python -m bench search` chose it on a validation view of the CIFAR-10 reference (5,000 train
# images held out; budget 4 pp there, 3 MB) as the fastest int8 candidate on OpenVINO; on the test
# split it is 7.0x the fastest fp32 runtime, 1.06 pp below fp32, 1.72 MB (docs/PERFORMANCE.md,
# "The frontier search on the CIFAR-10 reference").
FRONTIER = "prune-stages-0.2-0.3-0.3-0.9"
register(_stages_recipe(re.fullmatch(STAGES, FRONTIER)))
register(_pruned_int8(FRONTIER, "the edge target, chosen on a validation split"))


# prune-struct-stagewise (30% of stem and layers 1-3, 65% of layer4) was the edge target before the
# search; its ratios were chosen by scoring the test split, so it left the default matrix. The name
# still builds prune-stages-0.3-0.3-0.3-0.65's recipe under its own name, on request.
def _stagewise_recipe(m) -> Recipe:
    if m.group(1):
        return _pruned_int8("prune-struct-stagewise", "the former edge target")
    member = _stages_recipe(re.fullmatch(STAGES, "prune-stages-0.3-0.3-0.3-0.65"))
    return replace(member, name="prune-struct-stagewise",
                   summary=f"{member.summary} (chosen on the test split; see {FRONTIER})")


register_family(r"prune-struct-stagewise(\+int8)?", _stagewise_recipe)
