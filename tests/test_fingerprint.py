"""Machine fingerprints that tell machines apart (bench/devices.py), and the rule that keeps
baselines recorded under the first, coarser format usable (bench/baselines.py FINGERPRINT_RULES).

The /proc/cpuinfo samples are trimmed copies of real ones: a 2-core AMD EPYC VM (Zen 4, family 25)
and a newer one under the same model string (Zen 5, family 26); an AWS Graviton3 (Neoverse V1)
and a Raspberry Pi 4 (Cortex-A72).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from gate_fixtures import make_item, make_results

from bench.baselines import FINGERPRINT_RULES, BaselineStore
from bench.config import GateConfig
from bench.devices import (
    Device,
    cache_sizes_kb,
    fingerprint,
    fingerprint_format,
    gpu_identity,
    legacy_fingerprint,
    machine_label,
    parse_cpuinfo,
)
from bench.gate import run_gate
from bench.report import render_markdown

EPYC_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cache size\t: 1024 KB
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512dq avx512ifma avx512cd avx512bw \
avx512vl avx512_bf16 avx512vbmi avx512_vnni avx512_bitalg

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse
"""
EPYC_ZEN5 = EPYC_ZEN4.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17", "model\t\t: 2")
SAPPHIRE_RAPIDS_FLAGS = "avx2 fma avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc \
dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 \
i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""
CORTEX_A72 = """processor\t: 0
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""


def _info(cpuinfo: str, arch: str, **more) -> dict:
    return {"cpu_model": more.pop("cpu_model", "AMD EPYC"), "cpu_count": 2, "threads": 2, "gpu_name": None,
            "emulated": None, "cpu": {**parse_cpuinfo(cpuinfo, arch), "l2_kb": 1024, "l3_kb": 32768}, **more}


def test_x86_identity_family_model_stepping_and_kernel_features():
    ident = parse_cpuinfo(EPYC_ZEN4, "x86")
    assert (ident["vendor"], ident["family"], ident["model"], ident["stepping"]) == ("AuthenticAMD", 25, 17, 1)
    # Only kernel-relevant features, from the first processor's block, in the table's order.
    assert ident["features"] == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"]
    amx = parse_cpuinfo(EPYC_ZEN4.replace("avx2 avx512f", SAPPHIRE_RAPIDS_FLAGS), "x86")["features"]
    assert {"amx_tile", "amx_int8", "avx_vnni", "avx512_fp16"} <= set(amx)


def test_two_cpus_under_one_model_string_get_different_fingerprints():
    dev = Device("x86", "cpu")
    zen4, zen5 = _info(EPYC_ZEN4, "x86"), _info(EPYC_ZEN5, "x86")
    assert zen4["cpu_model"] == zen5["cpu_model"] == "AMD EPYC"
    fp4, fp5 = fingerprint(dev, zen4), fingerprint(dev, zen5)
    assert fp4 != fp5
    assert "family=25 model=17" in fp4 and "family=26 model=2" in fp5
    assert "isa=avx2+fma+avx512f+avx512bw+avx512_vnni+avx512_bf16" in fp4 and "l2=1024K l3=32768K" in fp4
    # ... while the first format could not tell them apart.
    assert legacy_fingerprint("x86", zen4) == legacy_fingerprint("x86", zen5) == "x86|AMD EPYC|threads=2"
    assert fingerprint_format(fp4) == 2 and fingerprint_format("x86|AMD EPYC|threads=2") == 1


def test_fingerprint_is_stable_and_changes_with_what_changes_kernels():
    dev, base = Device("x86", "cpu"), _info(EPYC_ZEN4, "x86")
    assert fingerprint(dev, base) == fingerprint(dev, _info(EPYC_ZEN4, "x86"))
    no_vnni = _info(EPYC_ZEN4.replace(" avx512_vnni", ""), "x86")
    for changed in (no_vnni, {**base, "threads": 1}, {**base, "cpu_count": 4},
                    {**base, "cpu": {**base["cpu"], "l3_kb": 16384}}):
        assert fingerprint(dev, changed) != fingerprint(dev, base)


def test_arm_identity_from_midr_fields_and_features():
    g3 = parse_cpuinfo(GRAVITON3, "arm")
    assert (g3["implementer"], g3["part"], g3["variant"], g3["revision"]) == ("0x41", "0xd40", "0x1", 1)
    assert g3["features"] == ["asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve"]
    a72 = parse_cpuinfo(CORTEX_A72, "arm")
    assert a72["part"] == "0xd08" and a72["features"] == ["asimd"]
    dev = Device("arm", "cpu")
    fp_g3 = fingerprint(dev, _info(GRAVITON3, "arm", cpu_model="Neoverse-V1"))
    assert fp_g3.startswith("v2|arm|Neoverse-V1|implementer=0x41 part=0xd40 variant=0x1 r1|isa=asimd+asimdhp+asimddp")
    assert fp_g3 != fingerprint(dev, _info(CORTEX_A72, "arm", cpu_model="Neoverse-V1"))
    assert "(0x41/0xd40)" in machine_label("arm", _info(GRAVITON3, "arm", cpu_model="Neoverse-V1"))


def test_an_emulated_run_keeps_its_own_fingerprint():
    info = _info(GRAVITON3, "arm", emulated="qemu-aarch64")
    assert fingerprint(Device("arm", "cpu"), info).endswith("|threads=2|emulated=qemu-aarch64")


def test_cuda_identity_names_gpu_capability_and_stack():
    props = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=141 * 2**30, multi_processor_count=132)
    gpu = gpu_identity(props, driver="570.86.15", cuda="12.8", cudnn=91002)
    assert gpu == {"name": "NVIDIA H200", "compute_capability": "9.0", "memory_gib": 141.0, "multiprocessors": 132,
                   "driver": "570.86.15", "cuda": "12.8", "cudnn": "91002"}
    info = {"cpu_model": "AMD EPYC 9R14", "gpu_name": "NVIDIA H200", "threads": 8, "gpu": gpu}
    fp = fingerprint(Device("cuda", "cuda"), info)
    assert fp == "v2|cuda|NVIDIA H200|sm=9.0|driver=570.86.15|cuda=12.8|cudnn=91002|threads=8"
    newer_driver = {**info, "gpu": {**gpu, "driver": "580.1"}}
    assert fingerprint(Device("cuda", "cuda"), newer_driver) != fp
    assert legacy_fingerprint("cuda", info) == "cuda|NVIDIA H200|threads=8"
    assert machine_label("cuda", info) == "cuda · NVIDIA H200 (sm 9.0) · threads=8"


def test_cache_sizes_from_sysfs(tmp_path):
    for idx, (level, size) in enumerate([("1", "32K"), ("1", "32K"), ("2", "1024K"), ("3", "32M")]):
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(level + "\n")
        (d / "size").write_text(size + "\n")
    assert cache_sizes_kb(str(tmp_path)) == {"l2_kb": 1024, "l3_kb": 32768}
    assert cache_sizes_kb(str(tmp_path / "missing")) == {"l2_kb": None, "l3_kb": None}


# --- the compatibility rule -----------------------------------------------------------------------

def _run(info: dict, p50_scale: float = 1.0, created: str = "2026-12-03T12:00:00Z") -> dict:
    items = [make_item("fp32", "eager", p50_ms=30.0 * p50_scale, seed=1),
             make_item("int8-static", "onnxruntime", p50_ms=6.0 * p50_scale, seed=2, n_correct=344)]
    r = make_results(items, fingerprint=fingerprint(Device("x86", "cpu"), info), created_utc=created)
    r["machine_info"] = {**r["machine_info"], **info}
    return r


def _legacy_baseline(store: BaselineStore, info: dict) -> None:
    """A baseline as the first format recorded it: keyed by the coarse string."""
    old = _run(info, created="2026-11-30T12:00:00Z")
    old["fingerprint"] = legacy_fingerprint("x86", info)
    old["machine_info"].pop("cpu")
    store.update(old)


@pytest.fixture
def store(tmp_path) -> BaselineStore:
    return BaselineStore(tmp_path / "baselines")


def test_a_legacy_baseline_gates_by_ratios_only_and_the_gate_says_so(store):
    zen4 = _info(EPYC_ZEN4, "x86")
    _legacy_baseline(store, zen4)
    # The same machine class, now fingerprinted in full, twice as slow in absolute terms but with
    # unchanged ratios: no absolute check may fire (the coarse string cannot prove it is the same CPU).
    run = _run(zen4, p50_scale=2.0)
    same, other, _ = store.lookup_with_notes(run)
    assert same is None and other["rule"] == "legacy" and other["fingerprint"] == "x86|AMD EPYC|threads=2"
    gate = run_gate(run, store, GateConfig())
    assert gate["fingerprint_rule"] == "legacy" and gate["baseline_fingerprint"] == "x86|AMD EPYC|threads=2"
    checks = {f["check"] for f in gate["findings"]}
    assert "latency_ratio" in checks and "latency_abs" not in checks
    assert not [f for f in gate["findings"] if f["verdict"] == "regression"], gate["findings"]
    # A ratio regression is still caught through the legacy entry.
    slowed = _run(zen4, p50_scale=1.0)
    for lat in next(it for it in slowed["items"] if it["runtime"] == "onnxruntime")["latency"]:
        lat["samples_ms"] = [s * 3 for s in lat["samples_ms"]]
        lat["p50_ms"] *= 3
        lat["ratio_to_reference"] *= 3
    regressions = [f for f in run_gate(slowed, store, GateConfig())["findings"] if f["verdict"] == "regression"]
    assert regressions and {f["check"] for f in regressions} == {"latency_ratio"}


def test_the_report_names_the_rule_applied(store):
    zen4 = _info(EPYC_ZEN4, "x86")
    _legacy_baseline(store, zen4)
    run = _run(zen4)
    run["gate"] = run_gate(run, store, GateConfig())
    text = render_markdown(run)
    assert "Compared with the entry of `x86|AMD EPYC|threads=2`, " + FINGERPRINT_RULES["legacy"] in text


def test_an_exact_entry_wins_over_the_legacy_one_and_allows_absolute_checks(store):
    zen4 = _info(EPYC_ZEN4, "x86")
    _legacy_baseline(store, zen4)
    store.update(_run(zen4))
    run = _run(zen4, p50_scale=3.0)
    same, _, _ = store.lookup_with_notes(run)
    assert same["rule"] == "exact"
    gate = run_gate(run, store, GateConfig())
    assert gate["fingerprint_rule"] == "exact" and gate["fingerprint_match"] is True
    assert any(f["check"] == "latency_abs" and f["verdict"] == "regression" for f in gate["findings"])


def test_another_generation_under_the_same_model_string_never_gets_absolute_checks(store):
    store.update(_run(_info(EPYC_ZEN4, "x86")))  # recorded in full on Zen 4
    run = _run(_info(EPYC_ZEN5, "x86"), p50_scale=0.5)  # Zen 5, twice as fast: not a "same machine"
    gate = run_gate(run, store, GateConfig())
    assert gate["fingerprint_rule"] == "other" and gate["fingerprint_match"] is False
    assert "latency_abs" not in {f["check"] for f in gate["findings"]}


def test_a_legacy_results_file_still_matches_its_legacy_entry_exactly(store):
    # A results file written before the new format (fingerprint "x86|AMD EPYC|threads=2") is
    # still gated in full against the entry recorded with it: same string, same format.
    zen4 = _info(EPYC_ZEN4, "x86")
    _legacy_baseline(store, zen4)
    old = _run(zen4)
    old["fingerprint"] = legacy_fingerprint("x86", zen4)
    same, _, _ = store.lookup_with_notes(old)
    assert same is not None and same["rule"] == "exact"
