"""Where per-item work runs: one small interface, two engines (the `compute` params).

    ordered_map(fn, items, compute, local_workers)  ->  fn(item) for every item, in input order

The caller is the one writer: it consumes the results in input order and writes them (the clip store, shard by
shard), so what it writes depends neither on the engine nor on the number of workers, and every output object
has exactly one writer.

- `local`: a pool of `local_workers` processes on this machine (1: in this process, no pool).
- `ray`: compute.workers Ray actors, each holding fn, take the items round-robin. With RAY_ADDRESS set (a
  cluster: KubeRay, or `ray start` inside a SLURM allocation) they run on that cluster; else a local Ray of
  compute.workers CPUs is started for the map and stopped after it. A worker process that dies (killed, out of
  memory, its node lost) is restarted and its calls run again (`RETRIES` times), so fn must be safe to run
  twice: the stages' fns only read their inputs and return.

Either way at most a few results per worker wait for the consumer (back-pressure: a slow writer holds the
decoders back instead of filling memory), and a consumer that stops early (an error) cancels what is pending.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import sys
from typing import Callable, Iterable, Iterator, get_args

from videogpt.config import ComputeParams, Engine

ENGINES = get_args(Engine)
RETRIES = 3  # Ray reruns of a task whose worker died (a Python exception in fn is not retried: it is raised)
AHEAD = 4    # results in flight per worker


def ordered_map(fn: Callable, items: Iterable, compute: ComputeParams | None = None, local_workers: int = 1,
                gpus: bool = False) -> Iterator:
    """fn over items, in input order (see the module doc): on `local_workers` processes here (the stage's own
    knob, e.g. data.num_workers) or, under compute.engine: ray, on compute.workers Ray workers, each holding
    compute.gpus_per_worker GPUs when fn runs a model (`gpus`)."""
    compute = compute or ComputeParams()
    if compute.engine == "local":
        return _local_map(fn, items, local_workers)
    if compute.engine == "ray":
        return _ray_map(fn, items, compute.workers, compute.gpus_per_worker if gpus else 0)
    raise ValueError(f"compute.engine: {compute.engine!r} is not one of {', '.join(ENGINES)}")


def _local_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    # Unlike Pool.imap, which queues every finished result when the consumer is slower than the workers.
    if workers == 1:
        yield from map(fn, items)
        return
    with multiprocessing.Pool(workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= AHEAD * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _Worker:
    """A Ray actor holding fn: fn (a model, say) is shipped and unpickled once per worker, not per item. (Ray
    logs a warning that a restarted actor needs its constructor's argument still in the object store: it is,
    the driver holds fn's reference until the map ends.)"""

    def __init__(self, fn: Callable):
        self.fn = fn

    def run(self, item):
        return self.fn(item)


def start_local_ray(cpus: int, env: dict[str, str] | None = None) -> None:
    """Start a Ray on this machine of `cpus` CPUs (its workers get `env` besides this process's environment).

    Its workers run at this process's priority: Ray nices them to 15 by default, made for nodes that run
    nothing else; on a machine shared with other jobs that starved them (decoding 5x slower than the local
    engine's processes under a load of 5, measured here)."""
    import ray  # the cluster extra; compute.engine: ray is refused at params time without it
    # address "local": always a new Ray. Without it ray.init() joins the Ray a `ray start` left on this machine
    # (its address file in /tmp/ray), even a dead one, and then refuses num_cpus.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env} if env else None, _system_config={"worker_niceness": 0})


@contextlib.contextmanager
def ray_session(workers: int):
    """The Ray to submit to: one this process already joined, the cluster at RAY_ADDRESS, or a local Ray of
    `workers` CPUs started here (and shut down on leaving)."""
    import ray
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS")
    # log_to_driver=False: a task's own prints stay in Ray's worker logs; its exceptions still reach ray.get
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        start_local_ray(workers)
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_map(fn: Callable, items: Iterable, workers: int, gpus: float) -> Iterator:
    with ray_session(workers) as ray:
        fn_ref = ray.put(fn)  # one copy in the object store, however many workers
        # A dead worker's actor is restarted (its constructor run again) and its pending calls run again.
        worker = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)
        actors = [worker.remote(fn_ref) for _ in range(workers)]
        where, resources = os.environ.get("RAY_ADDRESS") or "a local Ray", ray.cluster_resources()
        print(f"ray: {workers} workers on {where} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} "
              "GPUs)", file=sys.stderr, flush=True)
        pending = collections.deque()
        try:
            for i, item in enumerate(items):  # dealt round-robin; consumed in order
                pending.append(actors[i % workers].run.remote(item))
                if len(pending) >= AHEAD * workers:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        finally:
            for ref in pending:  # the consumer stopped early: nothing more is wanted
                ray.cancel(ref)
            for actor in actors:
                ray.kill(actor)
