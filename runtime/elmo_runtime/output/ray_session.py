"""The Ray that ``--engine ray`` runs on: a private local one, or a cluster joined as it is.

A local Ray (no ``address``):

* gets one CPU more than the actors take (:data:`HEADROOM_CPUS`): with none
  left for the read and write tasks Ray Data waits forever;
* listens on the loopback interface only. ``ray.init(_node_ip_address=
  "127.0.0.1")`` alone does not do it: Ray 2.60 replaces a loopback node
  address with the machine's outbound address (``services.
  resolve_ip_for_localhost``) and its GCS, raylet, object manager, workers
  and runtime-env agent then listen on every interface. :func:`_loopback`
  keeps the address as given for the duration of ``ray.init``, and every
  Ray process then binds 127.0.0.1 (tests/cli/test_ray.py lists the
  listening sockets of a run to check it);
* keeps its files in a new temp dir (removed afterwards) or ``temp_dir``,
  runs without the dashboard and usage reporting, and uses a random token
  for its own authentication instead of writing ``~/.ray/auth_token``.

With ``address``, the cluster is joined as it is: what it listens on is the
cluster's business. :func:`check_pool` refuses, in seconds, a pool the
cluster cannot hold (Ray Data would wait for it forever).
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RAY_HINT, ElmoError

HEADROOM_CPUS = 1  # for Ray Data's read and write tasks, next to the actors
LOOPBACK = "127.0.0.1"
# Ray puts Unix sockets at <temp dir>/session_<date>_<pid>/sockets/plasma_store; a
# socket path has at most 107 bytes, so the temp dir's own path must stay short.
TEMP_DIR_MAX = 40
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or ElmoError with the install hint."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ElmoError(RAY_HINT) from None
    return ray


@contextmanager
def _environ(values: dict[str, str], restore: tuple[str, ...] = ()) -> Iterator[None]:
    """``values`` set in os.environ; they and ``restore`` are put back as they were after."""
    saved = {k: os.environ.get(k) for k in (*values, *restore)}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def ray_session(
    address: str | None = None, cpus: int | None = None, temp_dir: str | os.PathLike | None = None
) -> Iterator[Any]:
    """Ray, joined at ``address`` or started locally with ``cpus`` CPUs; shut down after.

    A Ray already initialized in this process is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    with _ray_data_quiet(), _session(ray, address, cpus, temp_dir):
        yield ray


@contextmanager
def _ray_data_quiet() -> Iterator[None]:
    """Ray Data's console logging off: failures come back as exceptions, in one line here.

    Its progress lines, a false "no available CPUs" alarm while the actors
    start, and tracebacks of user errors stay in the logs under Ray's temp dir.
    """
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _loopback() -> Iterator[None]:
    """Keep a loopback node address as given while a local Ray starts (see the module doc)."""
    from ray._private import services

    resolve = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = resolve


@contextmanager
def _session(
    ray: Any, address: str | None, cpus: int | None, temp_dir: str | os.PathLike | None
) -> Iterator[None]:
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            yield
        finally:
            ray.shutdown()
        return
    own = temp_dir is None
    directory = _temp_dir() if own else Path(temp_dir).resolve()
    if len(str(directory)) > TEMP_DIR_MAX:
        raise ElmoError(
            f"{directory}: too long for Ray's sockets ({len(str(directory))} characters, at "
            f"most {TEMP_DIR_MAX}); pass a shorter --ray-temp-dir"
        )
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        # Ray turns token authentication on for a new local cluster and would write
        # ~/.ray/auth_token and say so; a token of its own keeps it quiet and private.
        # One per process: Ray's client caches the first token it read, so a second
        # local session in the same process must present the same one.
        env["RAY_AUTH_TOKEN"] = _process_token()
        logging.getLogger(AUTH_LOGGER).setLevel(logging.ERROR)
    try:
        with _environ(env, restore=("RAY_AUTH_MODE",)):
            with _loopback():
                ray.init(
                    num_cpus=cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    _temp_dir=str(directory),
                    _node_ip_address=LOOPBACK,
                )
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)


@functools.cache
def _process_token() -> str:
    """The random auth token of this process's local Rays (never written to disk)."""
    return secrets.token_hex(32)


def _temp_dir() -> Path:
    """A new directory for a local Ray, in the temp dir or, if its path is too long, in /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    if len(str(base)) + len("/elmo-ray-12345678") > TEMP_DIR_MAX:
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="elmo-ray-", dir=base))


def default_actors(ray: Any, threads: int, gpus_per_actor: float) -> int:
    """As many actors as the cluster's CPUs (less the headroom) and GPUs allow (0 if none)."""
    resources = ray.cluster_resources()
    actors = int((resources.get("CPU", 0) - HEADROOM_CPUS) // threads)
    if gpus_per_actor:
        actors = min(actors, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(0, actors)


def check_pool(ray: Any, actors: int, threads: int, gpus_per_actor: float) -> None:
    """ElmoError, with the numbers, unless the cluster holds ``actors`` plus the headroom.

    Ray Data would otherwise wait forever for actors that cannot be placed.
    """
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if actors < 1 or actors * threads > cpus - HEADROOM_CPUS:
        fits = max(0, int((cpus - HEADROOM_CPUS) // threads))
        raise ElmoError(
            f"the Ray cluster has {cpus:g} CPUs: {max(actors, 1)} actors x {threads} CPUs "
            f"need {max(actors, 1) * threads} plus {HEADROOM_CPUS} for reading and writing; "
            f"pass --actors {fits} or fewer" + (" (and --threads 1)" if fits == 0 else "")
            + ", or add CPUs to the cluster"
        )
    if gpus_per_actor and actors * gpus_per_actor > gpus:
        raise ElmoError(
            f"the Ray cluster has {gpus:g} GPUs: {actors} actors x {gpus_per_actor:g} GPUs "
            f"need {actors * gpus_per_actor:g}; pass fewer --actors or a smaller "
            "--gpus-per-actor"
        )
