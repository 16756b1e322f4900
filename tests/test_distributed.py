"""Inference work shared across ranks: two gloo processes split the batches and both get every result."""
import numpy as np
import torch
import torch.multiprocessing as mp

from videogpt.distributed import rank_and_world, sharded_map


def _worker(rank: int, world: int, port: int, out):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    seen = []

    def fn(batch):
        seen.append(int(batch[0]))
        return batch * 10

    result = sharded_map(fn, 11, 3, load=lambda a, b: np.arange(a, b))
    out.put((rank, rank_and_world(), seen, result.tolist()))
    torch.distributed.destroy_process_group()


def test_sharded_map_splits_batches_and_gathers_in_order():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    (r0, world0, seen0, res0), (r1, world1, seen1, res1) = results
    assert world0 == (0, 2) and world1 == (1, 2)
    assert seen0 == [0, 6] and seen1 == [3, 9]  # batches dealt round-robin, each computed once
    assert res0 == res1 == [10 * i for i in range(11)]


def test_sharded_map_without_a_process_group_is_a_plain_map():
    assert sharded_map(lambda b: b + 1, 5, 2, load=lambda a, b: np.arange(a, b)).tolist() == [1, 2, 3, 4, 5]
