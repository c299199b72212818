"""Where spikelight's Hydra configs live: the package ``spikelight.conf``, installed or not.

The configs are written once, in the checkout's top-level ``conf/``. A wheel ships that folder
as ``spikelight/conf`` (pyproject.toml maps the package onto it), so ``pip install .`` carries
them and Hydra reads them as ``pkg://spikelight.conf``. Code imported from a checkout's
``src/`` (an editable install, or ``PYTHONPATH=src``) uses that checkout's own ``conf/``: it is
registered as ``spikelight.conf`` when spikelight is imported, so a second checkout on the path
(another worktree, installed editable) can never lend it its configs.

A user adds configs of their own (experiments, datasets) with a folder on Hydra's search path
(``--config-dir`` or ``hydra.searchpath``). Hydra reads the search path in order, spikelight's
package before every such folder, so a user's file named like one of spikelight's is ignored:
:func:`shadowed_configs` finds those, for the up-front config check.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Traversable

CONFIG_MODULE = "spikelight.conf"
#: ``config_path`` of ``hydra.main`` and of a user's ``hydra.searchpath`` entry.
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
PRIMARY_CONFIG = "train"  # conf/train.yaml
#: Hydra's name of each way to add a folder to the search path, as a user writes it.
SEARCH_PATH_OPTIONS = {"command-line": "--config-dir"}


def checkout_conf() -> Path | None:
    """``<checkout>/conf`` when this package is imported from ``<checkout>/src``, else None."""
    package = Path(__file__).resolve().parent
    conf = package.parents[1] / "conf"
    if package.parent.name == "src" and (conf / "__init__.py").is_file():
        return conf
    return None


def register_checkout_conf() -> None:
    """Make ``spikelight.conf`` this checkout's ``conf/`` (no-op for an installed wheel)."""
    conf = checkout_conf()
    if conf is None or CONFIG_MODULE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        CONFIG_MODULE, conf / "__init__.py", submodule_search_locations=[str(conf)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONFIG_MODULE] = module
    spec.loader.exec_module(module)
    parent, _, name = CONFIG_MODULE.rpartition(".")
    setattr(sys.modules[parent], name, module)


def config_dir() -> Path:
    """The folder holding ``train.yaml`` (for ``initialize_config_dir`` and scripts)."""
    return Path(str(resources.files(CONFIG_MODULE)))


def _yaml_files(folder: Traversable, prefix: str = "") -> Iterator[str]:
    """``group/option.yaml`` of every config under ``folder``."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _yaml_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".yaml"):
            yield f"{prefix}{entry.name}"


def _source_folder(source: Mapping[str, str]) -> Traversable | None:
    """The folder of a search-path entry (``file`` or ``pkg``); None if it has none."""
    if source["schema"] == "file":
        return Path(source["path"])
    if source["schema"] == "pkg":
        try:
            return resources.files(source["path"])
        except (ModuleNotFoundError, TypeError, ValueError):
            return None
    return None


def _same(a: Traversable, b: Traversable) -> bool:
    return Path(str(a)).resolve() == Path(str(b)).resolve()


def shadowed_configs(sources: Sequence[Mapping[str, str]]) -> list[tuple[str, str, list[str]]]:
    """User folders whose configs spikelight's own hide: ``(option, folder, [group/file.yaml])``.

    ``sources`` is Hydra's search path in order (``hydra.runtime.config_sources``); only the
    folders after spikelight's package are read after it. A folder that is spikelight's own
    ``conf/`` (``--config-dir conf`` in a checkout) hides nothing.
    """
    names = [source["provider"] for source in sources]
    if "main" not in names:
        return []
    main = names.index("main")
    own_folder = _source_folder(sources[main])
    own = set(_yaml_files(own_folder))
    shadowed = []
    for source in sources[main + 1 :]:
        folder = _source_folder(source)
        if folder is None or not folder.is_dir() or _same(folder, own_folder):
            continue
        hidden = [name for name in _yaml_files(folder) if name in own]
        if hidden:
            option = SEARCH_PATH_OPTIONS.get(source["provider"], "hydra.searchpath")
            shadowed.append((option, str(folder), hidden))
    return shadowed
