"""One-process pieces of the distributed paths: row shards, the sharded start of V, identity
collectives."""

from __future__ import annotations

import numpy as np
import pytest

from ahcl import distributed as dist
from ahcl.methods.ahcl import initial_codes


@pytest.mark.parametrize("n, world", [(10, 3), (2, 4), (7, 1), (0, 2)])
def test_shard_slice_covers_rows_once_and_balanced(n, world):
    parts = [dist.shard_slice(n, r, world) for r in range(world)]
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_initial_codes_shards_equal_one_draw():
    n, c, seed = 1001, 24, 7
    # The one-process start of V before sharding existed, written out.
    whole = np.where(np.random.default_rng([seed, 0xA11C]).random((n, c)) < 0.5,
                     -1, 1).astype(np.int8)
    np.testing.assert_array_equal(initial_codes(n, c, seed), whole)
    parts = [initial_codes(n, c, seed, dist.shard_slice(n, r, 3), chunk=100) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_collectives_alone_are_identities():
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world_size() == 1
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(dist.all_reduce_numpy(x), x)
    np.testing.assert_array_equal(dist.gather_numpy(x), x)
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    dist.barrier()
    assert dist.init_from_env() is False  # no WORLD_SIZE: nothing to join
