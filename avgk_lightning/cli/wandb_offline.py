"""W&B never blocks a run: an online logger that could not reach W&B logs offline instead."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["offline_unless_reachable", "online_problem"]

_WANDB_HOST = "https://api.wandb.ai"


def online_problem() -> str | None:
    """Why W&B cannot log online from here (no API key, or its server unreachable), or None."""
    if os.environ.get("WANDB_API_KEY"):
        has_key = True
    else:
        try:
            has_key = netrc.netrc().authenticators(urlparse(_WANDB_HOST).hostname) is not None
        except (FileNotFoundError, netrc.NetrcParseError):
            has_key = False
    if not has_key:
        return "no W&B API key (run `wandb login` or set WANDB_API_KEY)"
    host = urlparse(os.environ.get("WANDB_BASE_URL", _WANDB_HOST))
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=3).close()
    except OSError as error:
        return f"{host.hostname} is unreachable ({error})"
    return None


def offline_unless_reachable(init_args: Any) -> None:
    """Turn an online W&B logger's arguments offline, with a warning, when it could not log online."""
    if getattr(init_args, "offline", False) or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    problem = online_problem()
    if problem is not None:
        rank_zero_warn(
            f"W&B cannot log online: {problem}. Logging offline instead; sync the run later with `wandb sync`."
        )
        init_args.offline = True
