"""Train or fine-tune on a uint8 split (CPU or CUDA; bf16 autocast on CUDA), seeded."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cards import ModelCard
from .data import Split
from .evaluate import batch_size_for
from .evaluate import logits as batched_logits

TIME_PROBE_STEPS = 3  # steps timed before a wall-clock budget (max_seconds) resizes the schedule


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 10.0  # fractional epochs make short fine-tunes expressible
    min_steps: int = 0  # small data sets need more passes than large ones for the same recovery
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.15
    augment: bool = True
    distill_weight: float = 0.0  # > 0: also match a teacher's soft outputs (fine-tune after pruning)
    temperature: float = 4.0
    seed: int = 0
    # A wall-clock budget for large data: after a few steps the schedule is shortened to the steps
    # that fit, so the learning rate still decays to zero. Not reproducible across machines.
    max_seconds: float | None = None


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Reflect-pad 4 + random crop + horizontal flip, on a uint8 batch."""
    n, _, h, w = x.shape
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2,), generator=gen).tolist()
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train(model: torch.nn.Module, data: Split, card: ModelCard, cfg: TrainConfig,
          device: str = "cpu", teacher: torch.nn.Module | None = None, log=print) -> dict:
    """Train in place; returns a summary (seconds, steps, final loss) for the manifest."""
    t_budget = time.perf_counter()  # the wall-clock budget counts the teacher's pass too
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=0.9, nesterov=True)
    n = len(data)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch), cfg.min_steps if cfg.epochs > 0 else 0)
    warm = max(1, int(cfg.warmup_fraction * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else _null()
    micro = batch_size_for(card.input_size, cfg.batch_size)
    cached_teacher = None
    if teacher is not None and cfg.distill_weight > 0 and not cfg.augment:
        # Without augmentation every epoch shows the teacher the same images: run it once.
        # On a CPU the teacher's forward pass would otherwise cost more than the student's step.
        cached_teacher = batched_logits(teacher, data, card, batch_size=512, device=device)
    t0, step, loss_v = time.perf_counter(), 0, float("nan")
    planned = total
    while step < total:
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_v = 0.0
            # Large inputs go through in micro-batches whose gradients add up to the batch's: the
            # optimizer sees cfg.batch_size images per step while memory holds only a micro-batch's
            # activations. Where one micro-batch is the whole batch (32x32) nothing changes.
            for part in idx.split(micro):
                xb = data.images[part]
                xb = _augment(xb, gen) if cfg.augment else xb.float()
                x = card.normalize(xb).to(device)  # normalize() takes any 0..255 tensor
                y = data.labels[part].to(device)
                with autocast:
                    logits = model(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                    if teacher is not None and cfg.distill_weight > 0:
                        with torch.no_grad():
                            t_logits = cached_teacher[part].to(device) if cached_teacher is not None else teacher(x)
                        T = cfg.temperature
                        kd = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(t_logits / T, 1),
                                      reduction="batchmean", log_target=True) * T * T
                        loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
                    loss = loss * (len(part) / len(idx))
                loss.backward()
                loss_v += float(loss.detach())
            opt.step()
            sched.step()
            step += 1
            if cfg.max_seconds is not None and step == TIME_PROBE_STEPS:
                per_step = (time.perf_counter() - t0) / step
                left = cfg.max_seconds - (time.perf_counter() - t_budget)
                total = min(total, step + max(0, int(left / per_step)))
                warm = min(warm, max(1, int(cfg.warmup_fraction * total)))
            if step % max(1, total // 5) == 0:
                spent = time.perf_counter() - t0
                log(f"  step {step}/{total} (epoch {step / steps_per_epoch:.1f}/{total / steps_per_epoch:.1f})  "
                    f"loss {loss_v:.3f}  {spent:.0f}s, ~{spent / step * (total - step):.0f}s left")
    model.eval().cpu()
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": total, "epochs": round(total / steps_per_epoch, 2),
            "final_loss": round(loss_v, 4), "batch_size": cfg.batch_size, "micro_batch_size": micro,
            "lr": cfg.lr, "seed": cfg.seed,
            "distill_weight": cfg.distill_weight, "images": n,
            **({"max_seconds": cfg.max_seconds, "planned_steps": planned} if cfg.max_seconds is not None else {})}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, data: Split, card: ModelCard, batches: int = 20, batch_size: int = 128) -> None:
    """Re-estimate BatchNorm statistics after pruning changed the activations."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches seen
    model.train()
    # No autograd graph: BN statistics come from the forward pass alone, and at 224x224 the saved
    # activations of a 128-image batch would take gigabytes.
    with torch.no_grad():
        for i in range(batches):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            if sl.start >= len(data):
                break
            model(card.normalize(data.images[sl]))
    model.eval()
