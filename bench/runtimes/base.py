"""What every runtime adapter provides: availability, support rules, and a loaded handle."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from compress import trust
from compress.build import Artifact
from compress.cards import ModelCard
from compress.data import Split
from compress.errors import UserError
from compress.fsutil import READ_ONLY_CACHE, atomic_write_bytes, atomic_write_json, sha256_file, writable
from compress.registry import Recipe

from ..devices import Device


@dataclass
class LoadRequest:
    """Everything an adapter may need to produce its deployable form of one variant."""
    artifact: Artifact
    recipe: Recipe
    model: torch.nn.Module  # the eager model of this variant (the reference)
    float_model: torch.nn.Module  # float model before quantization (== model for float variants)
    card: ModelCard
    device: Device
    threads: int
    calibration: Split  # the same train images the PyTorch int8 variant was calibrated on
    options: dict = field(default_factory=dict)  # runtime settings from the command line
    # (height, width, batch) when this handle serves one timed shape only (Runtime.static_shapes);
    # None for the accuracy pass, which feeds any batch at the card's input size.
    shape: tuple[int, int, int] | None = None


@dataclass
class Handle:
    runtime: str
    prepare: Callable[[torch.Tensor], Any]  # normalized float NCHW -> the runtime's native input
    run: Callable[[Any], Any]  # native input -> native output (not synchronized)
    to_numpy: Callable[[Any], np.ndarray]  # native output -> float32 logits
    path: Path | None  # the deployable file whose size is reported
    info: dict = field(default_factory=dict)  # session options etc., recorded in the results

    def logits(self, x: torch.Tensor) -> np.ndarray:
        return self.to_numpy(self.run(self.prepare(x)))

    @property
    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.path is not None else None


@dataclass(frozen=True)
class RuntimeOption:
    """A command-line option a runtime owns: added to the plugin's option group, parsed there,
    handed to the runtime in ``LoadRequest.options[dest]`` and recorded in the results header."""

    flag: str  # "--ort-opt-level"
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


# One refusal for every runtime that runs torch.ao's quantized modules.
TORCH_AO_NO_CUDA_INT8 = "torch.ao int8 modules have no CUDA kernels: int8 runs on CPU backends only"


class Runtime:
    """A runtime describes itself; adding one is one subclass registered with ``@register_runtime``.

    name               the id in test ids, results and ``--runtime``
    options            its own command-line options (``RuntimeOption``)
    requantizes_int8   int8 variants are re-quantized by the runtime from the float parent, so
                       they are judged against that parent too (bench/measure.py)
    int8_module_per_shape  int8 modules keep their kernels for the first input shape they see
                       (PyTorch's quantized conv, x86 engine): each timed shape loads its own
    static_shapes      every timed shape loads a handle of its own, given ``LoadRequest.shape``,
                       and compiled for exactly that shape (the deployment form)
    cuda_int8_refusal  why int8 variants cannot run on CUDA here; None where they can
    note               what a reader of the report must know about the runtime itself (deprecation);
                       recorded in the results header and printed with its table
    run_order          items run in ascending order (ties: registration order); eager, the
                       reference, comes first
    """

    name: ClassVar[str] = "base"
    run_order: ClassVar[int] = 100
    options: ClassVar[tuple[RuntimeOption, ...]] = ()
    requantizes_int8: ClassVar[bool] = False
    int8_module_per_shape: ClassVar[bool] = False
    static_shapes: ClassVar[bool] = False
    note: ClassVar[str | None] = None
    cuda_int8_refusal: ClassVar[str | None] = None

    def versions(self) -> dict[str, str | None]:
        """Library versions this runtime adds to the results header (None: not installed)."""
        return {}

    def unavailable_reason(self, device: Device) -> str | None:
        """Why this runtime cannot run on this host at all (missing package, provider); None if it can."""
        return None

    def usage_error(self, device: Device, options: dict) -> str | None:
        """Why this run cannot start as asked (checked at start-up, before anything is built): a
        broken install or an option this host cannot honour. None when it can."""
        return None

    def unsupported_reason(self, recipe: Recipe, device: Device) -> str | None:
        """Why this (variant, device) combination cannot exist in this runtime; None if it can."""
        if device.kind == "cuda" and recipe.kind.quantized:
            return self.cuda_int8_refusal
        return None

    def load(self, req: LoadRequest) -> Handle:
        raise NotImplementedError

    def option(self, req: LoadRequest, dest: str) -> Any:
        """The value of one of this runtime's own options (its default when the request has none)."""
        for opt in self.options:
            if opt.dest == dest:
                return req.options.get(dest, opt.default)
        raise KeyError(f"runtime {self.name} declares no option {dest!r}")


def module_version(module: str) -> str | None:
    """``module.__version__``, or None when it is not installed."""
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def dist_version(distribution: str) -> str | None:
    """The installed version of a distribution, read from its metadata without importing it (some,
    like torchao and nncf, take seconds to import and warn on import); None when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def calibration_batches(req: LoadRequest, batch_size: int = 32,
                        size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The variant's calibration images, normalized, as float32 NCHW batches (at ``size``, default
    the card's input size): every runtime that quantizes by itself calibrates on exactly the
    images PyTorch's int8 variant did."""
    calib = req.calibration
    for i in range(0, len(calib), batch_size):
        yield req.card.normalize(calib.images[i:i + batch_size], size).numpy()


# ---------------------------------------------------------------- runtime files beside the artifact
def runtime_dir(art: Artifact) -> Path:
    return art.dir / "runtime"


RECORD_PURPOSE = "runtime-file"  # what a runtime file record's HMAC is bound to (compress/trust.py)


def _record_body(name: str, key: dict, sha256: str) -> dict:
    return {"file": name, "key": key, "sha256": sha256}


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    """(the authenticated record of ``path``, None) or (None, why not): "missing", "damaged" or
    "unauthenticated" (its HMAC does not verify with this user's key: forged, or another key's)."""
    try:
        rec = json.loads((path.parent / f"{path.name}.json").read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError, RecursionError):
        return None, "damaged"
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or not isinstance(rec.get("key"), dict):
        return None, "damaged"
    if not trust.verify_json(_record_body(path.name, rec["key"], rec["sha256"]), rec.get("mac"), RECORD_PURPOSE):
        return None, "unauthenticated"
    return rec, None


def cached_file(art: Artifact, name: str, key: dict, make: Callable[[Path], None]) -> Path:
    """A derived file (TorchScript, ONNX) kept beside the artifact, rebuilt when ``key`` changes and
    used only while its sha256 matches a record authenticated with this user's key (HMAC,
    compress/trust.py): a swapped file, or one whose record someone else rewrote, is rebuilt.

    ``make`` writes into a private temporary directory outside the cache; the sha256 recorded is
    of the bytes this run made, then copied into place."""
    import shutil
    import tempfile

    from filelock import FileLock

    d = runtime_dir(art)
    path, record = d / name, d / f"{name}.json"
    key = {**key, "artifact_key": art.manifest["key"]}
    if not writable(d):  # a read-only cache: use what it holds, or say what to do
        rec, _ = _read_record(path)
        if rec is not None and rec["key"] == key and path.is_file() and sha256_file(path) == rec["sha256"]:
            return path
        raise UserError(READ_ONLY_CACHE.format(path=d, what=name))
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        rec, why = _read_record(path)
        if rec is not None and rec["key"] == key:
            try:
                if sha256_file(path) == rec["sha256"]:
                    return path
            except OSError:
                pass
        if why == "unauthenticated":
            trust.warn(f"{record} is not signed with your cache key ({trust.key_file()}): "
                       f"rebuilding {name} instead of loading it")
        private = Path(tempfile.mkdtemp(prefix="resnet18-bench-"))  # 0700, outside the cache
        try:
            tmp = private / f".{name}.tmp"
            make(tmp)
            data = tmp.read_bytes()
        finally:
            shutil.rmtree(private, ignore_errors=True)
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(path, data)
        atomic_write_json(record, {**_record_body(name, key, digest),
                                   "mac": trust.sign_json(_record_body(name, key, digest), RECORD_PURPOSE)})
    return path


def verified_bytes(path: Path) -> bytes:
    """The bytes of a cached runtime file, read once and checked against its authenticated record:
    hand these (not the path) to the loader, so that what is checked is what is loaded."""
    rec, why = _read_record(path)
    if rec is None:
        what = ("is not signed with your cache key" if why == "unauthenticated"
                else f"has no usable record ({why})")
        raise UserError(f"{path} {what}; delete {path.parent} and re-run")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror}); delete {path.parent} and re-run") from None
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        raise UserError(f"{path} does not match its recorded sha256; delete {path.parent} and re-run")
    return data


def verified(path: Path) -> Path:
    """``path`` if it matches its authenticated record now (see verified_bytes; UserError if not)."""
    verified_bytes(path)
    return path
