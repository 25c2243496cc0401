"""Binary codes: packing and (later) the Hamming index. numpy only."""

from ahcl.index.packing import as_packed, pack_codes, unpack_codes

__all__ = ["as_packed", "pack_codes", "unpack_codes"]
