"""Pre-flight for devices: the device a command asks for is checked before anything is read.

mergekit finds out that ``--cuda`` cannot work only when it first moves a tensor (after loading
every model: tens of seconds, then a raw ``AssertionError: Torch not compiled with CUDA
enabled``).  ``check_device`` says it at once, in one line naming what was asked and what this
torch has.
"""

from __future__ import annotations

from typing import Optional

from mergekit_awd.errors import DeviceError


def _available(kind: str) -> int:
    """How many devices of ``kind`` this torch can use (0 when none or not built in)."""
    import torch

    if kind == "cpu":
        return 1
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return int(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()))
    if kind == "xpu":
        return torch.xpu.device_count() if hasattr(torch, "xpu") and torch.xpu.is_available() else 0
    return 0


def describe_torch() -> str:
    """One phrase: this torch's version and the accelerators it can use."""
    import torch

    found = [f"{_available(kind)} {kind.upper()} device(s)" for kind in ("cuda", "mps", "xpu") if _available(kind)]
    return f"torch {torch.__version__} ({', '.join(found) if found else 'CPU only'})"


def check_device(device: Optional[str], asked_as: Optional[str] = None) -> None:
    """``DeviceError`` unless ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps`` …) can be used here."""
    import torch

    if device is None or device == "cpu":
        return
    shown = asked_as or f"--device {device}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"{shown}: {device!r} is not a torch device (cpu, cuda, cuda:N, mps, xpu)",
                          device=device) from None
    count = _available(parsed.type)
    if count == 0:
        raise DeviceError(f"{shown} asks for {parsed.type.upper()}, but this machine's {describe_torch()} has "
                          f"none; leave out {shown} to merge on the CPU", device=device)
    if parsed.index is not None and parsed.index >= count:
        raise DeviceError(f"{shown} asks for {device}, but {describe_torch()} has {count} such device(s)",
                          device=device)


def check_merge_devices(options) -> None:
    """The devices mergekit's options ask for (``--cuda``, ``--device``, ``--gpu-rich``)."""
    asked = "--cuda" if getattr(options, "cuda", False) and options.device in (None, "cuda") else None
    check_device(getattr(options, "device", None), asked_as=asked)


__all__ = ["check_device", "check_merge_devices", "describe_torch"]
