"""String choices in configs and records: one Enum base whose ``parse`` names the bad value and the valid ones."""
from __future__ import annotations

import enum
import re
from typing import Any, TypeVar

from agent.errors import BadInputError

C = TypeVar("C", bound="Choice")


class Choice(str, enum.Enum):
    """A str Enum read from user input: ``parse`` takes a member or its value in any case, and
    otherwise raises BadInputError naming the value and the valid ones ("fusion mode 'x' is not
    supported; valid values: auto, on, off, only")."""

    @classmethod
    def parse(cls: type[C], value: Any) -> C:
        if isinstance(value, cls):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        for member in cls:
            if text == member.value.lower():
                return member
        what = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()  # FusionMode -> "fusion mode"
        raise BadInputError(f"{what} {value!r} is not supported; valid values: {', '.join(m.value for m in cls)}")
