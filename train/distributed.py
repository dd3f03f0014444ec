"""Training in several processes: DistributedDataParallel, launched by torchrun's own launcher.

`aidetect train --nproc N` starts N processes on this machine through
`torch.distributed.launcher` (the code torchrun runs); `torchrun ... -m train DATA ...` starts
them on one or several machines. Either way each process finds its place in the environment
(RANK, WORLD_SIZE, LOCAL_RANK), joins the process group (NCCL on GPUs, gloo on CPUs), trains on
its shard of every epoch and gathers validation, and rank 0 alone prints, writes and exports.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

RENDEZVOUS_TIMEOUT_S = 120


@dataclass(frozen=True)
class Place:
    """This process's place in a run: rank among `world` processes, and its GPU on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1


SINGLE = Place()


def place_from_env() -> Place:
    """Where torchrun (or `--nproc`) put this process; one process when nothing says otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Place(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def join(place: Place, device: torch.device, timeout_s: int = RENDEZVOUS_TIMEOUT_S) -> None:
    """Join the process group; one line, not a hang, when the rendezvous cannot be reached."""
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        torch_dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=place.rank,
            world_size=place.world,
            timeout=dt.timedelta(seconds=timeout_s),
        )
    except (RuntimeError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise RuntimeError(
            f"process {place.rank} could not join the others at {address} within {timeout_s} s ({reason})"
        ) from None


def leave() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def gather(value):
    """Every process's `value`, in rank order, on every process."""
    out = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, value)
    return out


def share_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every process: each process updated
    its own in its last training step, and the checkpoint, written by rank 0, holds rank 0's."""
    for buffer in model.buffers():
        torch_dist.broadcast(buffer, src=0)


def total(*values: float) -> list[float]:
    """The sums over all processes of a few numbers."""
    tensor = torch.tensor(values, dtype=torch.float64)
    torch_dist.all_reduce(tensor)
    return tensor.tolist()


def check_gpus(nproc: int, device: str) -> None:
    """With GPUs, one process per GPU: refuse, in one line, more processes than GPUs."""
    uses_gpu = device in ("gpu", "cuda") or (device == "auto" and torch.cuda.is_available())
    if uses_gpu and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPUs (one process each)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(nproc: int, entrypoint, *args) -> None:
    """Run `entrypoint(*args)` in `nproc` processes on this machine, as torchrun would. A process
    that fails stops the others; raises RuntimeError naming the one that failed first, and why."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher logs every failure with tracebacks; the one line below says it for the user.
    for name in ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"aidetect-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as exc:
        rank, failure = _root_cause(exc.failures)
        raise RuntimeError(
            f"training process {rank} of {nproc} failed: {_reason(failure)}; the others were stopped"
        ) from None


def _root_cause(failures: dict) -> tuple:
    """The failure that caused the others: a process killed by a signal, else the earliest error
    (the rest are peers that lost their connection to it)."""
    return min(failures.items(), key=lambda item: (item[1].exitcode >= 0, item[1].timestamp, item[0]))


def _reason(failure) -> str:
    message = failure.message
    if isinstance(message, dict):  # what `record` wrote: "Type: text" and a call stack
        message = message.get("message", "")
    text = str(message).splitlines()[0] if message else f"exit code {failure.exitcode}"
    kind, _, rest = text.partition(": ")
    return rest if rest and kind.isidentifier() else text
