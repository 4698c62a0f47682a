"""A real slowdown of a chosen size, for checking the trend gate and the single-run confirmation
on real runs (scripts/trend-check.sh, docs/PERFORMANCE.md). Loaded as a pytest plugin:

    PYTHONPATH=scripts RESNET18_SLOWDOWN=0.12 pytest bench/ -p slowdown ...

Every ONNX Runtime call then takes RESNET18_SLOWDOWN (a fraction) longer than it would: when the
call returns, the calling thread busy-waits for that fraction of the call's own time. The work
is real (a core stays busy, the harness times it like any other call) and scales with the call,
so each ONNX Runtime item's ratio to the reference grows by that factor.

Why a made-up slowdown: none of the runtime settings tried on this machine moves ONNX Runtime or
OpenVINO by 10-15% (measured in one process, alternating): ORT disable_prepacking 1.01x, no CPU
memory arena 1.09x / no memory pattern 1.07x (both within the spread of repeated runs), disabling
ConvActivationFusion or ConvAddActivationFusion 0.98-0.99x, NchwcTransformer 1.40x, opt level
"extended" 1.2-1.5x, int8 NhwcTransformer 1.56x, qoperator vs qdq within noise; OpenVINO CPU
pinning off, denormals optimization off, 3 threads on 2 cores: 0.99-1.01x; 1 thread 1.79x.
"""
from __future__ import annotations

import dataclasses
import os
import time

from bench.runtimes.onnxruntime import OnnxRuntime

FRACTION = float(os.environ.get("RESNET18_SLOWDOWN", "0.12"))
if not 0 <= FRACTION < 10:
    raise SystemExit(f"RESNET18_SLOWDOWN={FRACTION}: give a fraction such as 0.12")
_load = OnnxRuntime.load


def _slowed_load(self, req):
    handle = _load(self, req)
    inner = handle.run

    def run(x):
        t0 = time.perf_counter()
        out = inner(x)
        end = time.perf_counter() + FRACTION * (time.perf_counter() - t0)
        while time.perf_counter() < end:
            pass
        return out

    return dataclasses.replace(handle, run=run, info={**handle.info, "slowdown_fraction": FRACTION})


OnnxRuntime.load = _slowed_load


def pytest_report_header(config):
    return f"scripts/slowdown.py: every ONNX Runtime call {FRACTION:.0%} slower (a deliberate slowdown)"
