"""One place that turns a device name ("auto", "cpu", "cuda", "cuda:1", ...) into a torch device."""

from __future__ import annotations

import torch

from shan.errors import DeviceError


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` when a GPU is present, else ``cpu``.

    ``"cuda"`` without an index becomes ``cuda:<local_rank>`` (one process per GPU under
    ``torchrun``). Asking for CUDA on a machine without it raises :class:`DeviceError`.
    """
    if isinstance(name, torch.device):
        dev = name
    else:
        text = str(name).strip()
        if text == "auto":
            return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(text)
        except RuntimeError as err:
            raise DeviceError(f"unknown device {text!r} (use auto, cpu or cuda)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(name)!r} was asked for, but no CUDA GPU is available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


__all__ = ["resolve_device"]
