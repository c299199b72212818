"""Config options that need an optional dependency (a pyproject extra), checked before Hydra.

Hydra's message for a launcher or sweeper whose plugin is not installed ("Could not load
'hydra/launcher/joblib'") does not say what to install; :func:`missing_extra` turns the
command-line option into a one-line error naming the option and the extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

#: ``group=option`` -> (the Hydra plugin it loads, the extra that installs it).
PLUGIN_OPTIONS = {
    "hydra/launcher=parallel": ("hydra_plugins.hydra_joblib_launcher", "sweeps"),
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "sweeps"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "sweeps"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "sweeps"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "sweeps"),
    "hparams_search=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "sweeps"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def missing_extra(arguments: Sequence[str]) -> str | None:
    """The error for the first override in ``arguments`` whose plugin is missing, else None."""
    for argument in arguments:
        key, _, value = argument.lstrip("+~").partition("=")
        option = f"{key}={value}"
        if option not in PLUGIN_OPTIONS:
            continue
        module, extra = PLUGIN_OPTIONS[option]
        if not _installed(module):
            plugin = module.rpartition(".")[2].replace("_", "-")
            return f"{option} needs {plugin}: pip install 'spikelight[{extra}]'"
    return None
