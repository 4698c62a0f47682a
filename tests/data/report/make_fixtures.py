"""Regenerates the fixture results files in this folder (run by hand, not by pytest).

The numbers are invented but shaped like a real CIFAR-10 run: every derived field
(p50, cv, ratio_to_reference, ci95, per_class ...) is computed from the samples
here, so the fixtures are internally consistent the way a real results file is.
    python tests/data/report/make_fixtures.py
"""
from __future__ import annotations

import base64
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from compress.fsutil import atomic_write_json  # noqa: E402

N_EVAL = 10000
N_SAMPLES = 9
DATASET = {"id": "cifar10-jpeg-5d1e0c2a", "name": "cifar10", "eval_samples": N_EVAL, "input_size": [32, 32]}
CHECKPOINT = {"sha256": "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f7",
              "source": "reference CIFAR-10 checkpoint"}


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 6), round(centre + half, 6)]


def accuracy(correct: int, rng: np.random.RandomState, fp32_mask=None, flips: int = 0) -> dict:
    mask = np.zeros(N_EVAL, dtype=bool)
    if fp32_mask is None:
        mask[rng.choice(N_EVAL, correct, replace=False)] = True
    else:
        # A compressed model mostly agrees with fp32: flip a few images each way.
        mask[:] = fp32_mask
        gain = correct - int(fp32_mask.sum())
        lose_n, win_n = flips + max(-gain, 0), flips + max(gain, 0)
        mask[rng.choice(np.flatnonzero(fp32_mask), lose_n, replace=False)] = False
        mask[rng.choice(np.flatnonzero(~fp32_mask), win_n, replace=False)] = True
    labels = np.arange(N_EVAL) % 10
    per_class = {str(c): round(float(mask[labels == c].mean()), 4) for c in range(10)}
    agree = 1.0 if fp32_mask is None else round(float((mask == fp32_mask).mean()), 4)
    return {"top1": correct / N_EVAL, "correct": correct, "n": N_EVAL, "ci95": wilson(correct, N_EVAL),
            "agreement_with_fp32": agree, "per_class": per_class,
            "correct_b64": base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()}, mask


def stats(samples: np.ndarray) -> dict:
    mean = float(samples.mean())
    stdev = float(samples.std(ddof=1))
    r = lambda x: round(float(x), 4)  # noqa: E731
    return {"samples_ms": [r(s) for s in samples], "p50_ms": r(np.percentile(samples, 50)),
            "p90_ms": r(np.percentile(samples, 90)), "p99_ms": r(np.percentile(samples, 99)),
            "min_ms": r(samples.min()), "mean_ms": r(mean), "stdev_ms": r(stdev), "cv": r(stdev / mean)}


def build(device, machine, fingerprint, created, items_spec, options, skipped, gate, seed):
    rng = np.random.RandomState(seed)
    ref_id = f"fp32-eager-{device}"
    ref_p50 = items_spec[0]["p50"]  # fp32-eager is first: its typical p50 per shape
    fp32_mask = None
    items = []
    for spec in items_spec:
        item_id = f"{spec['variant']}-{spec['runtime']}-{device}"
        item = {"id": item_id, "variant": spec["variant"], "runtime": spec["runtime"], "device": device,
                "status": spec.get("status", "ok"), "reason": spec.get("reason")}
        if item["status"] != "ok":
            items.append(item)
            continue
        item["runtime_info"] = ({"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL",
                                 "intra_op_threads": options["threads"]}
                                if spec["runtime"] == "onnxruntime" else {"intra_op_threads": options["threads"]})
        item["size_bytes"] = spec["size_bytes"]
        if "size_gzip_bytes" in spec:
            item["size_gzip_bytes"] = spec["size_gzip_bytes"]
        acc, mask = accuracy(spec["correct"], rng, fp32_mask, spec.get("flips", 0 if spec["variant"] == "fp32" else 60))
        if fp32_mask is None:
            fp32_mask = mask
        item["equivalence"] = {"reference": f"{spec['variant']}-eager-{device}", "max_rel_error": None,
                               "top1_agreement": acc["agreement_with_fp32"], "passed": True}
        item["accuracy"] = acc
        item["latency"], item["throughput"] = [], []
        for size in options["input_sizes"]:
            key = f"{size[0]}x{size[1]}"
            for batch in options["batch_sizes"]:
                spread = spec.get("noise", {}).get(key, 0.03)
                base = spec["p50"][key] * (batch if batch == 1 else batch * 0.6)
                ref_base = ref_p50[key] * (batch if batch == 1 else batch * 0.6)
                samples = base * (1 + spread * rng.standard_normal(N_SAMPLES))
                ref = ref_base * (1 + 0.03 * rng.standard_normal(N_SAMPLES))
                if item_id == ref_id:
                    ref = samples
                entry = {"input_size": size, "batch_size": batch, **stats(samples), "reference_id": ref_id,
                         "reference_samples_ms": [round(float(s), 4) for s in ref],
                         "reference_p50_ms": round(float(np.percentile(ref, 50)), 4)}
                entry["ratio_to_reference"] = round(entry["p50_ms"] / entry["reference_p50_ms"], 4)
                item["latency"].append(entry)
                if batch == max(options["batch_sizes"]):
                    item["throughput"].append({"input_size": size, "batch_size": batch,
                                               "img_s": round(batch / (entry["p50_ms"] / 1000), 1), "batches": 5})
        items.append(item)
    results = {
        "schema_version": 1, "kind": "resnet-bench-results", "created_utc": created,
        "machine_info": machine, "fingerprint": fingerprint,
        "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "onnxruntime": "1.32.0", "onnx": "1.23.2",
                     "bench": "0.1.0"},
        "commit_info": {"id": "3c1f9a2b7d4e5f60718293a4b5c6d7e8f9012a3b", "dirty": False},
        "device": device, "dataset": DATASET, "checkpoint": CHECKPOINT, "options": options,
        "items": items, "skipped": skipped,
    }
    if gate is not None:
        results["gate"] = gate
    return results


FP32_BYTES, ORT_FP32_BYTES = 44_787_214, 44_702_650


def x86() -> dict:
    machine = {"node": "ci-x86-1", "arch": "x86_64", "cpu_model": "AMD EPYC 9R14", "cpu_count": 2, "threads": 2,
               "gpu_name": None, "gpu_driver": None, "cuda_version": None, "os": "Linux-6.1-x86_64",
               "python": "3.11.7"}
    options = {"threads": 2, "batch_sizes": [1, 32], "input_sizes": [[32, 32], [224, 224]],
               "runtimes": ["eager", "onnxruntime"]}
    specs = [
        {"variant": "fp32", "runtime": "eager", "size_bytes": FP32_BYTES, "size_gzip_bytes": 41_412_077,
         "correct": 8398, "p50": {"32x32": 1.90, "224x224": 24.0}},
        {"variant": "fp32", "runtime": "onnxruntime", "size_bytes": ORT_FP32_BYTES, "correct": 8398,
         "p50": {"32x32": 0.52, "224x224": 12.1}},
        {"variant": "prune-l1-20", "runtime": "eager", "size_bytes": FP32_BYTES, "size_gzip_bytes": 37_118_540,
         "correct": 8371, "p50": {"32x32": 1.91, "224x224": 24.1}},
        {"variant": "prune-l1-20", "runtime": "onnxruntime", "size_bytes": ORT_FP32_BYTES, "correct": 8371,
         "p50": {"32x32": 0.53, "224x224": 12.2}},
        {"variant": "int8-dynamic", "runtime": "eager", "size_bytes": 44_771_986, "correct": 8396,
         "p50": {"32x32": 1.93, "224x224": 24.3}, "noise": {"32x32": 0.25}},
        {"variant": "int8-dynamic", "runtime": "onnxruntime", "status": "error",
         "reason": "export failed: quantized::linear_dynamic has no ONNX symbolic; use int8-static for onnxruntime"},
        {"variant": "int8-static", "runtime": "eager", "size_bytes": 11_344_918, "correct": 8262,
         "p50": {"32x32": 1.10, "224x224": 9.0}},
        {"variant": "int8-static", "runtime": "onnxruntime", "size_bytes": 11_301_234, "correct": 8329,
         "p50": {"32x32": 0.58, "224x224": 5.2}},
    ]
    skipped = [{"id": "fp16-eager-x86", "reason": "fp16 is for CUDA; CPU fp16 kernels are not a deployment target"}]
    # Gate values are filled in from the items below, as the real gate reads them.
    gate = {"baseline_file": "baselines/cifar10-jpeg-5d1e0c2a/x86.json", "fingerprint_match": True, "findings": [
        {"id": "fp32-eager-x86", "check": "accuracy", "shape": None, "verdict": "ok",
         "message": "fp32/eager/x86 top-1 {value:.2f}% vs baseline {baseline:.2f}%: {diff:+.2f} pp (limit -1.0 pp)",
         "baseline": 83.98, "limit": 1.0, "p_value": None},
        {"id": "fp32-onnxruntime-x86", "check": "latency_abs", "shape": "224x224/b1", "verdict": "not significant",
         "message": "fp32/onnxruntime/x86 latency p50 {value:.2f} ms vs {baseline:.2f} ms: {ratio:.2f}x "
                    "(p = 0.21, limit 1.10x)",
         "baseline": 11.80, "limit": 1.10, "p_value": 0.21},
        {"id": "int8-static-onnxruntime-x86", "check": "latency_abs", "shape": "224x224/b1", "verdict": "regression",
         "message": "int8-static/onnxruntime/x86 latency p50 {value:.2f} ms vs {baseline:.2f} ms: {ratio:.2f}x slower "
                    "(p < 0.001, limit 1.10x)",
         "baseline": 3.97, "limit": 1.10, "p_value": 0.0004},
        {"id": "int8-dynamic-eager-x86", "check": "latency_abs", "shape": "32x32/b1", "verdict": "noisy",
         "message": "int8-dynamic/eager/x86 32x32/b1: cv {cv:.2f} > 0.10, not compared; rerun on an idle machine",
         "baseline": 1.90, "limit": 1.10, "p_value": None},
        {"id": "prune-l1-20-onnxruntime-x86", "check": "latency_abs", "shape": "224x224/b1", "verdict": "new",
         "message": "prune-l1-20/onnxruntime/x86 has no baseline; accept it with the gate's update command",
         "baseline": None, "limit": 1.10, "p_value": None},
        {"id": "int8-dynamic-onnxruntime-x86", "check": "latency_abs", "shape": "224x224/b1", "verdict": "missing",
         "message": "int8-dynamic/onnxruntime/x86 is in the baseline but errored in this run",
         "baseline": 9.4, "limit": 1.10, "p_value": None},
    ]}
    results = build("x86", machine, "x86|AMD EPYC 9R14|threads=2", "2026-11-30T03:00:00Z", specs, options,
                    skipped, gate, seed=1)
    items = {it["id"]: it for it in results["items"]}
    for f in gate["findings"]:
        item, value, cv = items[f["id"]], None, None
        if item["status"] == "ok" and f["check"] == "accuracy":
            value = round(item["accuracy"]["top1"] * 100, 2)
        elif item["status"] == "ok":
            entry = next(e for e in item["latency"] if f"{e['input_size'][0]}x{e['input_size'][1]}/b{e['batch_size']}"
                         == f["shape"])
            value, cv = entry["p50_ms"], entry["cv"]
        f["value"] = value
        ratio = value / f["baseline"] if value is not None and f["baseline"] else None
        diff = value - f["baseline"] if value is not None and f["baseline"] else None
        f["message"] = f["message"].format(value=value, baseline=f["baseline"], ratio=ratio, diff=diff, cv=cv)
    return results


def rpi() -> dict:
    machine = {"node": "pi5", "arch": "aarch64", "cpu_model": "Cortex-A76", "cpu_count": 4, "threads": 4,
               "gpu_name": None, "gpu_driver": None, "cuda_version": None, "os": "Linux-6.6-aarch64",
               "python": "3.11.2"}
    options = {"threads": 4, "batch_sizes": [1, 32], "input_sizes": [[32, 32], [224, 224]],
               "runtimes": ["eager", "onnxruntime"]}
    specs = [
        {"variant": "fp32", "runtime": "eager", "size_bytes": FP32_BYTES, "correct": 8398,
         "p50": {"32x32": 9.8, "224x224": 141.0}},
        {"variant": "fp32", "runtime": "onnxruntime", "size_bytes": ORT_FP32_BYTES, "correct": 8398,
         "p50": {"32x32": 3.1, "224x224": 88.0}},
        {"variant": "int8-static", "runtime": "eager", "size_bytes": 11_344_918, "correct": 8262,
         "p50": {"32x32": 6.2, "224x224": 71.0}},
        {"variant": "int8-static", "runtime": "onnxruntime", "size_bytes": 11_301_234, "correct": 8329,
         "p50": {"32x32": 2.4, "224x224": 39.0}},
    ]
    skipped = [{"id": "int8-dynamic-eager-rpi", "reason": "qnnpack has no dynamic-quantized kernels on this build"}]
    return build("rpi", machine, "rpi|Cortex-A76|threads=4", "2026-11-30T03:20:00Z", specs, options,
                 skipped, None, seed=2)


if __name__ == "__main__":
    atomic_write_json(HERE / "results-x86.json", x86())
    atomic_write_json(HERE / "results-rpi.json", rpi())
    print("wrote", HERE / "results-x86.json", HERE / "results-rpi.json")
