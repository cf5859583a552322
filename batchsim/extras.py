"""Optional dependencies: a command that needs an extra says which, in one line."""

from __future__ import annotations

import importlib
import importlib.util

from batchsim.sim.errors import UsageError

# what `pip install 'batchsim[profile]'` adds (pyproject.toml's profile extra)
PROFILE_EXTRA = ("torch", "transformers", "psutil")


def require_profile_extra(command: str) -> None:
    """UsageError naming the missing modules and the extra when the real engine's dependencies
    are not importable (imported here: the command imports them next anyway)."""
    missing = []
    for name in PROFILE_EXTRA:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] in missing:  # needs one already found missing
                continue
            if e.name != name:  # installed, but one of its own dependencies is not
                raise UsageError(f"{name} is installed but cannot be imported ({e}): reinstall "
                                 "it with pip install 'batchsim[profile]'") from None
            missing.append(name)
    if missing:
        raise UsageError(f"`batchsim {command}` needs {' and '.join(missing)} (the profile "
                         "extra, not installed here): pip install 'batchsim[profile]'")


# what `pip install 'batchsim[serve]'` adds (pyproject.toml's serve extra)
SERVE_EXTRA = ("fastapi", "uvicorn", "httpx")


def require_serve_extra(command: str, modules: tuple[str, ...] = SERVE_EXTRA) -> None:
    """UsageError naming the missing modules when the serve extra is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"`batchsim {command}` needs {' and '.join(missing)} (the serve extra, "
                         "not installed here): pip install 'batchsim[serve]'")


def require_sweep_extra() -> None:
    """UsageError naming the sweep extra when Ray (for `sweep --backend ray`) is not importable."""
    try:
        importlib.import_module("ray")
    except ModuleNotFoundError as e:
        if e.name != "ray":  # installed, but one of its own dependencies is not
            raise UsageError(f"ray is installed but cannot be imported ({e}): reinstall it with "
                             "pip install 'batchsim[sweep]'") from None
        raise UsageError("`batchsim sweep --backend ray` needs ray (the sweep extra, not "
                         "installed here): pip install 'batchsim[sweep]'") from None
