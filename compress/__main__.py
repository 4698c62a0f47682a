"""``python -m compress {list,train,build}``: errors are one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import nonneg_float, positive_float, positive_int
from .errors import UserError


def add_source_options(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS, DEFAULT_CACHE_MAX_GB

    p.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits (embedded, offline), imagefolder (train/ and test/ class folders), cifar10")
    p.add_argument("--data-root", type=Path, help="dataset root (imagefolder, cifar10)")
    p.add_argument("--checkpoint", type=Path, help="fp32 state dict (.pt/.pth/.safetensors); default: embedded digits model")
    p.add_argument("--card", type=Path, help="model card JSON (default: beside the checkpoint, same name)")
    p.add_argument("--cache-dir", type=Path, help="decoded-data and artifact cache (default: user cache dir)")
    p.add_argument("--artifact-dir", type=Path, help="where variants are built (default: <cache-dir>/artifacts)")
    p.add_argument("--eval-samples", type=positive_int, help="fixed stratified subset of test (default: all)")
    p.add_argument("--download", action="store_true", help="cifar10: download if missing (needs network)")
    p.add_argument("--eval-split", default=None,
                   help="imagefolder: the evaluation folder (default: test/, else val/ as in ImageNet's layout)")
    p.add_argument("--cache-max-gb", type=nonneg_float, default=DEFAULT_CACHE_MAX_GB,
                   help="imagefolder: decoded images kept in the cache per run; larger subsets are streamed "
                        f"from the files (default {DEFAULT_CACHE_MAX_GB:g}; 0 streams everything)")


def cmd_list(args) -> int:
    from .registry import get_recipe, list_variants

    for name in list_variants(args.pattern):
        r = get_recipe(name)
        print(f"{name:24s} {r.kind:6s} {'/'.join(r.devices):14s} {r.summary}  [{r.origin}]")
    return 0


def cmd_build(args) -> int:
    from .build import build_variant
    from .context import open_context
    from .registry import list_variants

    if args.recipe_file is not None:
        from .recipefile import load_recipe_file

        doc = load_recipe_file(args.recipe_file)
        if args.finetune_epochs is None:
            args.finetune_epochs = doc["finetune_epochs"]
        args.variant = doc["variant"]
    names = list_variants(args.variant.split(","))
    ctx = open_context(args.dataset, args.data_root, args.checkpoint, args.card, args.cache_dir, args.artifact_dir,
                       args.eval_samples, args.calib_samples, args.finetune_epochs, args.download, args.train_device,
                       log=lambda s: print(s, file=sys.stderr, flush=True), finetune_samples=args.finetune_samples,
                       finetune_minutes=args.finetune_minutes, eval_split=args.eval_split,
                       cache_max_gb=args.cache_max_gb, validation_samples=args.validation_samples)
    arts, models = [], {}
    for n in names:
        arts.append(build_variant(n, ctx, force=args.force, _models=models))
    print(summary_table(arts, ctx))
    return 0


def summary_table(arts, ctx) -> str:
    from tabulate import tabulate

    acc_key = str(ctx.eval_samples or "all")
    rows = []
    for a in arts:
        m = a.manifest
        acc = m["accuracy"][acc_key]
        # Formatted here: tabulate's floatfmt does not apply with disable_numparse=True.
        rows.append([a.name, f"{m['size_bytes'] / 1e6:.2f}", f"{m['size_gzip_bytes'] / 1e6:.2f}", f"{m['parameters']:,}",
                     f"{m['nonzero_parameters']:,}", f"{m['macs'] / 1e6:,.1f}", f"{acc['top1']:.2%}",
                     f"{acc['correct']}/{acc['n']}", f"{m['build_seconds']:.2f}", str(a.dir)])
    head = ["variant", "size MB", "gzip MB", "params", "non-zero params", "MMACs", "top-1", "correct",
            "build s", "artifact"]
    note = (f"dataset {ctx.dataset.id} (eval: {rows and arts[0].manifest['accuracy'][acc_key]['n']} images), "
            f"checkpoint sha256 {ctx.checkpoint_sha256[:12]}, input {ctx.card.input_size[0]}x{ctx.card.input_size[1]}; "
            f"size = serialized weights file, MB = 10^6 bytes, MACs per image")
    return tabulate(rows, head, disable_numparse=True) + "\n" + note


def cmd_train(args) -> int:
    import torch
    from safetensors.torch import save

    from .cards import card_path_for, load_card
    from .context import check_classes
    from .data import load_dataset
    from .fsutil import atomic_write_bytes, atomic_write_json, sha256_file
    from .models import build_model, load_model
    from .train import TrainConfig, train

    card = load_card(args.card)
    ds = load_dataset(args.dataset, card.input_size, args.data_root, args.cache_dir, args.download, card.transform,
                      eval_split=args.eval_split, cache_max_gb=args.cache_max_gb)
    check_classes(card, ds)
    torch.manual_seed(args.seed)  # initialization too, not only the training loop
    model = load_model(args.checkpoint, card) if args.checkpoint else build_model(card)
    summary = train(model, ds.train, card, TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                                       seed=args.seed), device=args.train_device)
    atomic_write_bytes(args.output, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_json(card_path_for(args.output), card.to_json() | {
        "file": args.output.name, "sha256": sha256_file(args.output), "training": summary,
        "trained_on": f"{ds.id} train"})
    print(f"wrote {args.output} and {card_path_for(args.output).name} ({summary['seconds']}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compress", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="registered variants (glob patterns)")
    p.add_argument("pattern", nargs="*", default=["*"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("build", help="build variants into artifact directories and print a summary table")
    add_source_options(p)
    p.add_argument("--variant", default="*", help="comma list of names or glob patterns (default: all)")
    p.add_argument("--calib-samples", type=positive_int, default=512, help="train images for int8 calibration")
    p.add_argument("--finetune-epochs", type=nonneg_float, help="override the fine-tune length of pruned variants")
    p.add_argument("--finetune-samples", type=positive_int,
                   help="fine-tune on a fixed stratified subset of this many train images (default: all)")
    p.add_argument("--finetune-minutes", type=positive_float,
                   help="stop each fine-tune after this many minutes (recorded; not reproducible across machines)")
    p.add_argument("--train-device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--validation-samples", type=positive_int,
                   help="score on this many train images held out (stratified), fine-tune and calibrate on the "
                        "rest: where choices are made; the test split only reports")
    p.add_argument("--recipe-file", type=Path,
                   help="build the variant a search chose (python -m bench search -o FILE), with its fine-tune length; "
                        "instead of --variant")
    p.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("train", help="train or fine-tune a baseline and write safetensors + card")
    add_source_options(p)
    p.add_argument("--output", type=Path, required=True, help="output .safetensors (card written beside it)")
    p.add_argument("--epochs", type=nonneg_float, default=10.0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-device", default="cpu", choices=["cpu", "cuda"])
    p.set_defaults(func=cmd_train)

    args = ap.parse_args(argv)
    if args.cmd == "train" and args.card is None:
        ap.error("train needs --card PATH (architecture, input size, mean/std, classes)")
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
