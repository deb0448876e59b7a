"""Accelerators jaxcl knows by name: their memory and peak float32 rates, for `jaxcl plan` on a
machine without the device and for a benchmark's share of the peak."""

from __future__ import annotations

import dataclasses

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class DeviceKind:
    """One accelerator model.

    memory_bytes: the card's memory (what nvidia-smi reports as total). f32_flops: the
    float32 peak without tensor cores (what "highest" precision matmuls can reach);
    tf32_flops: the dense TF32 tensor-core peak (NVIDIA's datasheets quote twice this, "with
    sparsity"). `names` are lower-case substrings of jax's `device_kind` that identify it.
    """

    name: str
    label: str
    memory_bytes: int
    f32_flops: float
    tf32_flops: float
    names: tuple[str, ...]


# Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM5: FP32 67 TFLOPS, TF32 Tensor Core 989
# TFLOPS with sparsity; PCIe: 51 and 756), NVIDIA H200 Tensor Core GPU datasheet (SXM: FP32 67
# TFLOPS, TF32 989 with sparsity), NVIDIA A100 Tensor Core GPU datasheet (FP32 19.5 TFLOPS,
# TF32 312 with sparsity); the exact figures from the clocks (H100/H200 SXM: 66.9 and 494.7
# dense TFLOPS). Memory as nvidia-smi reports it on the cards seen here (H100 SXM 81559 MiB,
# H200 143771 MiB), else the datasheet's.
KINDS = {
    k.name: k
    for k in (
        DeviceKind("h100", "NVIDIA H100 SXM5 80GB", 81559 << 20, 66.9e12, 494.7e12, ("h100",)),
        DeviceKind("h100-pcie", "NVIDIA H100 PCIe 80GB", 80 * GIB, 51.2e12, 378e12, ("h100 pcie",)),
        DeviceKind("h200", "NVIDIA H200 SXM 141GB", 143771 << 20, 66.9e12, 494.7e12, ("h200",)),
        DeviceKind("a100", "NVIDIA A100 SXM4 80GB", 80 * GIB, 19.5e12, 156e12, ("a100",)),
    )
}


def detect(device_kind: str) -> DeviceKind | None:
    """The known kind jax's `device_kind` string names (e.g. "NVIDIA H100 80GB HBM3"), the
    most specific match first; None for any other device (a CPU among them)."""
    text = device_kind.lower().replace("-", " ")
    matches = [k for k in KINDS.values() for n in k.names if n in text]
    return max(matches, key=lambda k: max(len(n) for n in k.names), default=None)


# What jax's GPU client takes of a card's memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION):
# a device's `bytes_limit`, which blocks are sized against on the device itself.
JAX_MEMORY_FRACTION = 0.75
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": GIB, "T": 1 << 40}


def target(text: str) -> tuple[str, int, DeviceKind | None]:
    """The device `jaxcl plan --device-memory` names: a known kind (`KINDS`, e.g. "h100") or a
    memory size ("80G", "80GiB", "81559M", "1.5T": binary units; a bare number is bytes).

    Returns:
      (label, the card's memory in bytes, its DeviceKind or None for a bare size).

    Raises:
      ConfigError: neither, naming the option and the value.
    """
    import re

    from jaxcl.errors import ConfigError

    key = text.strip().lower()
    if key in KINDS:
        k = KINDS[key]
        return k.label, k.memory_bytes, k
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", key)
    size = float(m.group(1)) * _UNITS[m.group(2).upper()] if m else 0.0
    if size < 1 << 20:
        raise ConfigError(
            f"--device-memory = {text!r}: expected a memory size such as 80G (at least 1M) "
            f"or a device kind: {', '.join(KINDS)}"
        )
    return f"a device of {size / GIB:,.1f} GiB", int(size), None
