"""Binary codes: packing, the Hamming index (exact k-NN, range search, MIH, files). numpy only."""

from ahcl.index.hits import Hit
from ahcl.index.index import HammingIndex, HammingIndexError, search_results
from ahcl.index.packing import as_packed, pack_codes, unpack_codes

__all__ = ["HammingIndex", "Hit", "HammingIndexError", "as_packed", "pack_codes", "search_results",
           "unpack_codes"]
