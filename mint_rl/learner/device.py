"""The device the learner computes on: "auto", "cpu", "cuda" or "cuda:N".

Checked in two steps: the spelling where settings are built (a typo fails at once, before a model
or a vLLM engine starts), and the device's presence where the learner starts (settings may be
built on a machine without the GPU the learner's machine has). Importing this module does not
import torch, so configs can check the spelling cheaply.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mint_rl.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

DEVICE_FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(value: object, field: str = "device") -> str:
    """`value` if it spells a device the learner accepts; else InvalidInputError naming `field`."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise InvalidInputError(field, f"must be {DEVICE_FORMS}, got {value!r}")
    return value


def resolve_device(value: str, field: str = "device") -> torch.device:
    """The torch device `value` names on this machine: "auto" is the first CUDA device when one
    is available, else the CPU. A CUDA device that is not there is refused, naming `field`."""
    import torch

    check_device(value, field)
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise InvalidInputError(field, f"{value!r} asked for, but no CUDA device is available "
                                       "(torch.cuda.is_available() is False); use device='cpu' "
                                       "or 'auto'")
    device = torch.device(value if value != "auto" else "cuda")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise InvalidInputError(field, f"{value!r} asked for, but this machine has {count} CUDA "
                                       f"device(s) (cuda:0 .. cuda:{count - 1})")
    # An explicit index: tensors report cuda:0, never bare cuda, so devices compare equal.
    return device if device.index is not None else torch.device("cuda",
                                                                torch.cuda.current_device())
