"""Time one OpenVINO model the plain way, outside the harness: the cross-check of the harness's
OpenVINO latency (same packed IR file, same plugin properties, batch 1, a fixed input).

    python scripts/openvino-plain.py PATH/TO/openvino-x86.ir [--size 224] [--threads 2] [--seconds 10] [--precision f32]

PATH is the IR the harness cached beside a variant's artifact (runtime/openvino-<device>.ir);
prints the p50 and p90 in ms of --seconds of back-to-back synchronous calls after 2 s of warm-up.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import openvino as ov

from bench.runtimes.openvino import compile_config, unpack_ir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ir")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="inference precision (the harness pins f32; bf16 is the plugin's default on CPUs with "
                        "AVX512_BF16 or AMX)")
    a = p.parse_args()
    with open(a.ir, "rb") as f:
        xml, weights = unpack_ir(f.read())
    core = ov.Core()
    model = core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
    model.reshape({model.inputs[0].any_name: ov.PartialShape([1, 3, a.size, a.size])})
    compiled = core.compile_model(model, "CPU", {**compile_config(a.threads), "INFERENCE_PRECISION_HINT": a.precision})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
    for _phase, seconds in (("warm-up", 2.0), ("timed", a.seconds)):
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            request.infer({0: x}, share_inputs=True)
            times.append((time.perf_counter() - t0) * 1e3)
    p50, p90 = np.percentile(times, [50, 90])
    print(f"{a.ir}: {len(times)} calls, p50 {p50:.2f} ms, p90 {p90:.2f} ms "
          f"(precision {compiled.get_property('INFERENCE_PRECISION_HINT')}, threads {a.threads})")


if __name__ == "__main__":
    main()
