"""The data-parallel training processes, and a clean stop on SIGINT/SIGTERM.

Under ``torchrun`` (or any launcher that sets ``WORLD_SIZE``/``RANK``/
``MASTER_ADDR``) each process joins one gloo group; alone, a process is rank
0 of a world of 1 and no group is created.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def launched_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 when not launched)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass
class Processes:
    """This process's place among the data-parallel training processes."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, metrics and messages."""
        return self.rank == 0

    @classmethod
    def start(cls) -> Processes:
        """Join the launcher's process group (gloo), or run alone when WORLD_SIZE is 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owns)

    def stop(self, finished: bool = False) -> None:
        """Leave the process group; after a finished run, only once every process is done
        (a process tearing gloo down while another still writes its checkpoint can abort)."""
        if self.owns_group:
            if finished:
                dist.barrier()
            dist.destroy_process_group()

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        """Mean of ``value`` and OR of ``flag`` over the processes."""
        if self.world == 1:
            return value, flag
        t = torch.tensor([value, float(flag)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    def gather(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each tensor stacked over the processes (rank order) on a new axis 0."""
        if self.world == 1:
            return {k: v.unsqueeze(0) for k, v in tensors.items()}
        out = {}
        for k, v in tensors.items():
            parts = [torch.empty_like(v) for _ in range(self.world)]
            dist.all_gather(parts, v.contiguous())
            out[k] = torch.stack(parts)
        return out


@contextmanager
def stop_on_signal() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM ask for a clean stop (checkpoint, then exit); a second SIGINT aborts.

    Yields a function that tells whether a stop was asked for. Outside the
    main thread no handler can be installed and it always answers False.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
