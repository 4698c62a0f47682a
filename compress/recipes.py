"""The built-in variants. Each ``apply`` takes the parent's float model and returns
(model, facts) where facts go into the manifest (pruning history, fine-tune, calibration)."""
from __future__ import annotations

import copy
import re

from . import prune, quantize
from .registry import Recipe, register, register_family
from .train import TrainConfig, recalibrate_bn, train


def _fp32(model, ctx, p):
    return model, {}


def _l1(model, ctx, p):
    return prune.l1_unstructured(copy.deepcopy(model), p["amount"], include_fc=p["include_fc"]), {}


def _global(model, ctx, p):
    return prune.global_l1_unstructured(copy.deepcopy(model), p["amount"]), {}


def _struct(model, ctx, p):
    teacher = model
    pruned = copy.deepcopy(model)
    history = prune.channel_prune(pruned, p["ratio"], ctx.card.input_size, round_to=p["round_to"],
                                  stage_ratios=p.get("stage_ratios"))
    recalibrate_bn(pruned, ctx.dataset.train, ctx.card)
    # An explicit --finetune-epochs is taken literally (also below the recipe's minimum steps).
    override = ctx.finetune_epochs is not None
    epochs = ctx.finetune_epochs if override else p["finetune_epochs"]
    facts = {"pruning_history": history, "finetune": None}
    if epochs > 0:
        ctx.log(f"  fine-tuning {p['ratio']:.0%} channel-pruned model for {epochs} epochs on train "
                f"({len(ctx.dataset.train)} images)")
        # No augmentation: the teacher's logits are then computed once, which halves the cost on a CPU.
        cfg = TrainConfig(epochs=epochs, min_steps=0 if override else p["finetune_min_steps"], lr=p["finetune_lr"],
                          distill_weight=p["distill_weight"], batch_size=128, warmup_fraction=0.1, augment=False)
        facts["finetune"] = train(pruned, ctx.dataset.train, ctx.card, cfg, device=ctx.train_device,
                                  teacher=teacher, log=ctx.log)
    return pruned, facts


def _dynamic(model, ctx, p):
    # Packed Linear weights belong to the engine selected when they are packed: pin and record it.
    backend = quantize.host_backend()
    quantize.set_engine(backend)
    return quantize.quantize_dynamic_linear(model), {"backend": backend}


def _static(model, ctx, p):
    calib = ctx.dataset.calibration_split(min(ctx.calib_samples, len(ctx.dataset.train)))
    q = quantize.quantize_static(model, calib, ctx.card, backend=p["backend"])
    return q, {"calibration": ctx.calibration_info(calib), "backend": p["backend"]}


def _fp16(model, ctx, p):
    return quantize.to_fp16(model), {}


STATIC = {"backend": "x86", "per_channel": True, "fuse": "conv-bn-relu", "observer": "histogram (activations)"}

register(Recipe("fp32", "float", "the trained checkpoint, unchanged", "tutorial §2", None, {}, apply=_fp32))
register(Recipe("prune-l1-20", "float", "L1 unstructured, 20% of every conv and the fc, masks made permanent",
                "tutorial §3.1", "fp32", {"amount": 0.2, "include_fc": True}, apply=_l1))
register(Recipe("prune-global-30", "float", "global L1 unstructured, 30% across all convs",
                "tutorial §3.2", "fp32", {"amount": 0.3}, apply=_global))
register(Recipe("int8-dynamic", "int8", "quantize_dynamic on nn.Linear (only the fc in ResNet18)",
                "tutorial §4.1", "fp32", {"modules": ["Linear"], "dtype": "qint8"}, apply=_dynamic))
register(Recipe("int8-static", "int8", "static int8 PTQ: conv-bn-relu fused, per-channel weights, calibrated",
                "tutorial §4.2", "fp32", STATIC, devices=("x86",), apply=_static))
register(Recipe("int8-static-arm", "int8", "static int8 PTQ for ARM (qnnpack backend, per-tensor weights)",
                "tutorial §4.2, ARM backend", "fp32", {**STATIC, "backend": "qnnpack", "per_channel": False},
                devices=("arm",), apply=_static))
register(Recipe("fp16", "fp16", "half precision weights and activations", "beyond the tutorial", "fp32",
                {}, devices=("cuda",), apply=_fp16))


# The fine-tune every channel-pruned variant gets: 2 epochs of distillation from fp32
# (distillation only: 80.7% vs 80.1% with 30% hard labels, same cost; docs/PERFORMANCE.md).
STRUCT_FINETUNE = {"round_to": 8, "finetune_epochs": 2.0, "finetune_min_steps": 300, "finetune_lr": 0.02,
                   "distill_weight": 1.0}


def _struct_recipe(m) -> Recipe:
    ratio = float(m.group(1))
    if not 0.0 < ratio < 1.0:
        from .errors import UserError

        raise UserError(f"prune-struct ratio must be between 0 and 1, got {m.group(1)}")
    return Recipe(f"prune-struct-{m.group(1)}", "float",
                  f"{ratio:.0%} of channels removed (Torch-Pruning, L1, round_to 8), BN recalibrated, fine-tuned "
                  f"with distillation from fp32", "beyond the tutorial", "fp32",
                  {"ratio": ratio, **STRUCT_FINETUNE}, apply=_struct)


def _pruned_int8(parent: str, role: str) -> Recipe:
    """``<parent>+int8``: a channel-pruned variant, then static int8 (x86)."""
    return Recipe(f"{parent}+int8", "int8", f"{parent} then static int8 (x86): {role}", "beyond the tutorial",
                  parent, STATIC, devices=("x86",), apply=_static)


def _struct_int8_recipe(m) -> Recipe:
    return _pruned_int8(f"prune-struct-{m.group(1)}", "the real edge target")


STRUCT, STRUCT_INT8 = r"prune-struct-(0\.\d+)", r"prune-struct-(0\.\d+)\+int8"
register_family(STRUCT, _struct_recipe)
register_family(STRUCT_INT8, _struct_int8_recipe)
register(_struct_recipe(re.fullmatch(STRUCT, "prune-struct-0.5")))
register(_struct_int8_recipe(re.fullmatch(STRUCT_INT8, "prune-struct-0.5+int8")))


# Stage-wise ratios, chosen by measurement on the CIFAR-10 reference (docs/PERFORMANCE.md): at a
# 32x32 input layer4 sees 1x1 maps yet holds 75% of the parameters, while the widths of the stem
# and layers 1-3 decide most of the accuracy lost. Same fine-tune as prune-struct-<ratio>; after
# it, 82.4% vs 80.7% for uniform 50% at 1.4x its MACs.
register(Recipe("prune-struct-stagewise", "float",
                "channels removed per stage (Torch-Pruning, L1, round_to 8): 30% of stem and layers 1-3, 65% of "
                "layer4; BN recalibrated, fine-tuned with distillation from fp32",
                "beyond the tutorial", "fp32", {"ratio": 0.3, "stage_ratios": {"layer4": 0.65}, **STRUCT_FINETUNE},
                apply=_struct))
register(_pruned_int8("prune-struct-stagewise", "the edge target"))
