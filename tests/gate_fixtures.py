"""Synthetic results documents that follow docs/results-schema.md, for gate/report tests.

    item = make_item("int8-static", "onnxruntime", p50_ms=3.0, cv=0.08, seed=1)
    results = make_results([make_item("fp32", "eager", p50_ms=5.0), item])

make_results fills in the interleaved-reference fields (reference_id, reference_samples_ms,
ratio_to_reference) from the run's fp32-eager item, as the real harness does. Latency samples
are lognormal: right-skewed like real timings, with the requested coefficient of variation.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from bench.baselines import baseline_item
from bench.stats import latency_stats, pack_bits, wilson_interval

FINGERPRINT = "x86_64|Test CPU 9000|threads=2"
OTHER_FINGERPRINT = "x86_64|Other CPU 7000|threads=2"
DATASET_ID = "digits-test0001"
CHECKPOINT_SHA = "d5b7" + "0" * 60
N_IMAGES = 360
DEFAULT_SHAPES = ((32, 32, 1), (224, 224, 1))


def lognormal_samples(rng: np.random.Generator, median_ms: float, cv: float, n: int) -> list[float]:
    """n latencies with the given median and (approximately) coefficient of variation."""
    sigma = math.sqrt(math.log1p(cv * cv))
    return (median_ms * np.exp(sigma * rng.standard_normal(n))).tolist()


def make_mask(n_correct: int, n: int = N_IMAGES, seed: int = 1234) -> np.ndarray:
    """A per-image correctness mask with n_correct True; the same seed gives nested masks."""
    order = np.random.default_rng(seed).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_correct]] = True
    return mask


def item_id(variant: str, runtime: str, device: str = "x86") -> str:
    return f"{variant}-{runtime}-{device}"


def make_item(
    variant: str,
    runtime: str = "eager",
    device: str = "x86",
    *,
    p50_ms: float = 5.0,
    cv: float = 0.08,
    n_samples: int = 100,
    seed: int = 0,
    correct_mask: np.ndarray | None = None,
    n_correct: int = 346,
    with_mask: bool = True,
    size_bytes: int = 11_301_234,
    shapes=DEFAULT_SHAPES,
) -> dict:
    """One measured ("ok") item. Shape i gets median p50_ms * (1 + i)."""
    rng = np.random.default_rng(seed)
    mask = make_mask(n_correct) if correct_mask is None else np.asarray(correct_mask, bool)
    n, k = int(mask.size), int(mask.sum())
    latency = []
    for i, (h, w, b) in enumerate(shapes):
        samples = lognormal_samples(rng, p50_ms * (1 + i), cv, n_samples)
        latency.append({"input_size": [h, w], "batch_size": b, "samples_ms": samples,
                        **latency_stats(samples),
                        "reference_id": None, "reference_samples_ms": None,
                        "reference_p50_ms": None, "ratio_to_reference": None})
    return {
        "id": item_id(variant, runtime, device),
        "variant": variant, "runtime": runtime, "device": device,
        "status": "ok", "reason": None,
        "runtime_info": {},
        "size_bytes": size_bytes,
        "equivalence": None,
        "accuracy": {
            "top1": k / n if n else 0.0, "correct": k, "n": n,
            "ci95": list(wilson_interval(k, n)),
            "agreement_with_fp32": None,
            "per_class": {},
            "correct_b64": pack_bits(mask) if with_mask else None,
        },
        "latency": latency,
        "throughput": [{"input_size": [224, 224], "batch_size": 32,
                        "img_s": 32_000.0 / (p50_ms * 20), "batches": 5}],
    }


def skipped_item(variant: str, runtime: str, device: str = "x86", *,
                 status: str = "skipped", reason: str = "not supported here") -> dict:
    return {"id": item_id(variant, runtime, device), "variant": variant, "runtime": runtime,
            "device": device, "status": status, "reason": reason}


def make_results(
    items: list[dict] | None = None,
    *,
    fingerprint: str = FINGERPRINT,
    device: str = "x86",
    dataset_id: str = DATASET_ID,
    checkpoint_sha: str = CHECKPOINT_SHA,
    created_utc: str = "2026-11-30T03:00:00Z",
    commit: str | None = "abc123",
) -> dict:
    """A valid results document. Default items: fp32-eager (the reference) and int8-static/ORT."""
    if items is None:
        items = [make_item("fp32", "eager", p50_ms=5.0, seed=1),
                 make_item("int8-static", "onnxruntime", p50_ms=2.0, seed=2, n_correct=344)]
    items = copy.deepcopy(items)
    reference = next((it for it in items if it["variant"] == "fp32" and it["runtime"] == "eager"
                      and it["status"] == "ok"), None)
    if reference is not None:
        ref_by_shape = {(tuple(lat["input_size"]), lat["batch_size"]): lat
                        for lat in reference["latency"]}
        for it in items:
            for lat in it.get("latency") or []:
                ref = ref_by_shape.get((tuple(lat["input_size"]), lat["batch_size"]))
                if ref is None:
                    continue
                lat.update(reference_id=reference["id"],
                           reference_samples_ms=list(ref["samples_ms"]),
                           reference_p50_ms=ref["p50_ms"],
                           ratio_to_reference=lat["p50_ms"] / ref["p50_ms"])
    arch = fingerprint.split("|")[0]
    return {
        "schema_version": 1,
        "kind": "resnet-bench-results",
        "created_utc": created_utc,
        "machine_info": {"node": "test-host", "arch": arch, "cpu_model": fingerprint.split("|")[1],
                         "cpu_count": 2, "threads": 2, "gpu_name": None, "gpu_driver": None,
                         "cuda_version": None, "os": "Linux-6.1-x86_64", "python": "3.11.7"},
        "fingerprint": fingerprint,
        "versions": {"torch": "2.14.1", "onnxruntime": "1.23.2", "bench": "0.1.0"},
        "commit_info": {"id": commit, "dirty": False},
        "device": device,
        "dataset": {"id": dataset_id, "name": "digits", "eval_samples": N_IMAGES,
                    "input_size": [32, 32]},
        "checkpoint": {"sha256": checkpoint_sha, "source": "synthetic test checkpoint"},
        "options": {"threads": 2, "batch_sizes": [1], "input_sizes": [[32, 32], [224, 224]],
                    "runtimes": ["eager", "onnxruntime"]},
        "items": items,
        "skipped": [],
    }


def baseline_entry(results: dict, fingerprint: str | None = None) -> dict:
    """What BaselineStore.lookup would return after recording ``results`` (no files involved)."""
    return {
        "fingerprint": fingerprint or results["fingerprint"],
        "checkpoint_sha256": results["checkpoint"]["sha256"],
        "recorded_utc": results["created_utc"],
        "commit": results["commit_info"]["id"],
        "items": {it["id"]: baseline_item(it, results)
                  for it in results["items"] if it["status"] == "ok"},
    }
