"""What every baseline shares: keyword-only hyper-parameters in a dataclass, ``get_config``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ahcl.errors import AhclError


def check_n_bits(n_bits: int) -> None:
    """Raise :class:`AhclError` unless ``n_bits`` is a positive multiple of 8 (the packed format)."""
    if n_bits <= 0 or n_bits % 8:
        raise AhclError(f"n_bits must be a positive multiple of 8, got {n_bits}")


class ParamsMethod:
    """Base of the baselines: ``Method(**params)`` builds ``self.params = Params(**params)``.

    A subclass sets ``name`` and ``Params`` (a dataclass with ``n_bits`` and ``seed``).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except TypeError as exc:  # an unknown keyword: say which, without the dunder noise
            raise AhclError(f"{self.name}: {exc}".replace("__init__() ", "")) from None

    def get_config(self) -> dict[str, Any]:
        """The method name and every hyper-parameter (replays the run)."""
        return {"method": self.name, **dataclasses.asdict(self.params)}
