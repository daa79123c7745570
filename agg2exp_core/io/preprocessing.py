"""How a scan becomes network input; a model source brings its own (see ``models``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Preprocessing:
    """How a scan becomes network input: RAS orientation, target spacing, HU window to [0, 1]."""

    spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    hu_window: tuple[float, float] = (-1024.0, 1024.0)

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing) if self.spacing else None, "hu_window": list(self.hu_window)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Preprocessing":
        spacing = d.get("spacing")
        return cls(tuple(float(s) for s in spacing) if spacing else None,
                   tuple(float(h) for h in d.get("hu_window", (-1024.0, 1024.0))))
