"""A local filesystem under the fsspec protocol "counting://", which records every read request (a whole-object
or ranged GET, as on object storage) in `GETS`: the loaders' requests are counted on local files exactly as they
would be sent to a bucket."""
from __future__ import annotations

import fsspec
from fsspec.implementations.local import LocalFileSystem

GETS: list[str] = []


class CountingFileSystem(LocalFileSystem):
    protocol = "counting"

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("counting://"):
            path = path[len("counting://"):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):  # every read (whole, or a byte range) opens the file once
        if "r" in mode:
            GETS.append(self._strip_protocol(path))
        return super()._open(path, mode=mode, **kwargs)


def register() -> None:
    fsspec.register_implementation("counting", CountingFileSystem, clobber=True)


def url(path) -> str:
    return "counting://" + str(path)
