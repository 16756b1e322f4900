"""The hand-written CPU attention of the compiled decode step (videogpt.decode_kernel) against plain attention."""
import math

import pytest
import torch

from videogpt.decode_kernel import CACHE_DTYPES, KEY_BLOCK, decode_attention, decode_attention_reference


def blocked_operands(B, H, hd, blocks, seed=0, cache_dtype=torch.float32):
    """q (B, H, hd) float32 scaled, keys (B, H, blocks, hd, KEY_BLOCK), values (B, H, blocks * KEY_BLOCK, hd), both
    in cache_dtype, and the keys as plain rows (B, H, slots, hd) for the textbook attention."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, hd, generator=g) * hd ** -0.5
    rows = torch.randn(B, H, blocks * KEY_BLOCK, hd, generator=g).to(cache_dtype)
    values = torch.randn(B, H, blocks * KEY_BLOCK, hd, generator=g).to(cache_dtype)
    keys = rows.unflatten(2, (blocks, KEY_BLOCK)).transpose(-1, -2).contiguous()
    return q, keys, values, rows


def textbook(q, rows, values, n):
    """softmax(q k^T) v over the first n positions, in float64."""
    scores = torch.einsum("bhd,bhnd->bhn", q.double(), rows[:, :, :n].double())
    return torch.einsum("bhn,bhnd->bhd", scores.softmax(-1), values[:, :, :n].double())


# head dims: below one vector, the reference config's odd 63, a multiple of 16, the paper's 144 (9 vectors:
# two passes over the rows), and one past a pass; n: one position, a block's edge either side, the whole cache
@pytest.mark.parametrize("hd", [5, 63, 64, 144, 129])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40, 48])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cache_dtype", CACHE_DTYPES)
def test_the_kernel_is_attention_over_the_first_n_positions(hd, n, threads, cache_dtype):
    """In float32 arithmetic whatever the cache's dtype: a bfloat16 cache's values, widened exactly, give the
    float64 attention of those values to float32 precision."""
    q, keys, values, rows = blocked_operands(3, 2, hd, blocks=3, cache_dtype=cache_dtype)
    values[:, :, n:] = float("nan")  # past the prefix: never read (a masked read would give NaN)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = decode_attention(q, keys, values, n)
    finally:
        torch.set_num_threads(saved)
    expected = textbook(q, rows, values, n)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(decode_attention_reference(q, keys, values, n).double(), expected,
                               rtol=1e-5, atol=1e-6)


def test_one_position_returns_its_value_and_large_scores_do_not_overflow():
    q, keys, values, rows = blocked_operands(1, 1, 63, blocks=2)
    torch.testing.assert_close(decode_attention(q, keys, values, 1), values[:, :, 0])
    q = q * 1e4  # scores ~1e4: exp without the max subtracted would be inf
    out = decode_attention(q, keys, values, 20)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), textbook(q, rows, values, 20), rtol=1e-5, atol=1e-6)


def test_n_outside_the_cache_is_refused():
    q, keys, values, _ = blocked_operands(1, 1, 8, blocks=2)
    for n in (0, 2 * KEY_BLOCK + 1):
        with pytest.raises(ValueError, match=f"n = {n}"):
            decode_attention(q, keys, values, n)


def test_operands_the_kernel_does_not_read_are_refused_by_dtype():
    """A bfloat16 q, a float16 cache, or keys and values of different dtypes: a clear error naming the dtypes, not
    memory read as the wrong type."""
    q, keys, values, _ = blocked_operands(1, 1, 8, blocks=2)
    for args in ((q.bfloat16(), keys, values), (q, keys.half(), values.half()), (q, keys, values.bfloat16())):
        with pytest.raises(ValueError, match=r"decode_attention: q torch\.\w+ on cpu, keys torch\.\w+, values"):
            decode_attention(*args, 3)


def test_the_step_compiled_with_the_kernel_matches_its_reference():
    """Inside a compiled function (as in the decode step, n a symbol), the custom op gives the reference's
    result at every n, from one graph."""
    torch._dynamo.reset()
    q, keys, values, _ = blocked_operands(2, 2, 63, blocks=3)
    f = torch.compile(lambda q, k, v, n: decode_attention(q * 1.0, k, v, n), dynamic=True, fullgraph=True)
    for n in (2, 17, 33, 47):
        torch.testing.assert_close(f(q, keys, values, n), decode_attention_reference(q, keys, values, n),
                                   rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(f(q, keys, values, 48).sum()))
