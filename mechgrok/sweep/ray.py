"""The Ray backend: one Ray task per job (``num_cpus=1``, ``max_retries=retries``) on an
existing cluster (``address``: ``auto`` or ``host:port``) or, with no address, on a Ray instance
started here for the sweep. Each task writes its own run directory, so on a multi-machine cluster
the sweep's folder must be one every node mounts at the same path. Ray is optional:
``pip install 'mechgrok[ray]'``."""

from __future__ import annotations

from typing import Any

from mechgrok.errors import MechgrokError
from mechgrok.resources import available_cores
from mechgrok.sweep.job import failed_results, run_job
from mechgrok.sweep.local import OnJobResult

__all__ = ["check_ray_address", "connect_ray", "import_ray", "run_ray"]


def check_ray_address(address: str) -> None:
    """A host:port address must accept a connection before Ray is asked (Ray itself retries
    for a long time)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise MechgrokError(f"Ray address {address!r} must be 'auto' or host:port "
                            f"(e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        raise MechgrokError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); "
                            f"start one there with `ray start --head`, or drop --address to "
                            f"start a local Ray instance") from None


def import_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise MechgrokError("the Ray backend needs Ray, which is not installed: "
                            "pip install 'mechgrok[ray]'") from None
    return ray


def connect_ray(address: str | None, workers: int | None) -> Any:
    """Connect to (or start) Ray; one clear error when the address is unreachable."""
    ray = import_ray()
    if address not in (None, "auto"):
        check_ray_address(address)
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "logging_level": "ERROR", "configure_logging": True}
    try:
        if address is None:
            # "local": always a new instance, even where `ray start` recorded a cluster or
            # RAY_ADDRESS is set (plain ray.init() would join it, and refuse num_cpus)
            ray.init(address="local", num_cpus=workers or available_cores(),
                     object_store_memory=100 * 1024 * 1024, **kw)
        else:
            ray.init(address=address, **kw)
    except ConnectionError as e:
        why = str(e).split(". Please")[0].rstrip(".")
        raise MechgrokError(f"cannot connect to a Ray cluster at {address}: {why}; start one with "
                            f"`ray start --head`, or drop --address to start a local "
                            f"instance") from None
    return ray


def run_ray(jobs: list[dict[str, Any]], address: str | None, workers: int | None,
            retries: int, on_result: OnJobResult) -> None:
    """Run every job as a Ray task; ``on_result`` as each one ends. A Ray instance started here
    (no ``address``) is stopped afterwards."""
    ray = connect_ray(address, workers)
    started_here = address is None  # a local instance started for this sweep is stopped after it
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries,
                            retry_exceptions=[RuntimeError, OSError])(run_job)
        refs = {remote.remote(job): job for job in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                job = refs.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # the task failed after its retries (or its node died)
                    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    res = failed_results(job, f"Ray task failed after {retries} retries: {why}")
                on_result(job, res)
    finally:
        if started_here:
            ray.shutdown()
