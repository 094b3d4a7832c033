"""One base error for the library, one device resolver."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch

import shan
from shan.device import resolve_device
from shan.errors import DeviceError, ShanError


def _library_error_classes() -> list[type]:
    found = []
    for mod in pkgutil.walk_packages(shan.__path__, "shan."):
        module = importlib.import_module(mod.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, Exception):
                found.append(obj)
    return found


def test_every_library_error_derives_from_shan_error():
    classes = _library_error_classes()
    assert len(classes) >= 10  # the walk really found the library's errors
    assert [c.__name__ for c in classes if not issubclass(c, ShanError)] == []


def test_resolve_device_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_refuses_what_is_not_there():
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
