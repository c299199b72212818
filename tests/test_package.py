"""spikelight as a package: the wheel carries the configs, and they compose outside a checkout.

The configs live once, in the checkout's ``conf/``; the wheel ships them as ``spikelight/conf``.
The fast tests build the wheel, compose with Hydra's compose API in a fresh process and add a
user's config folder through the search path; the slow one installs into a fresh venv and
trains from an empty directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from spikelight.configs import shadowed_configs
from spikelight.extras import PLUGIN_OPTIONS, missing_extra
from spikelight.train import main
from spikelight.validation import ConfigError, validate_config
from tests.conftest import REPO_ROOT

SOURCE = REPO_ROOT / "src" / "spikelight"
CONF = REPO_ROOT / "conf"
BUILD_FILES = ("pyproject.toml", "README.md", "src", "conf")  # what `pip install .` reads
RUN_DIR = re.compile(r"outputs/runs/(\d{4}-\d{2}-\d{2})_\d{2}-\d{2}-\d{2}")


def copy_tree(target: Path) -> Path:
    """The files a build reads, copied (builds write build/ and *.egg-info into their tree)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    target.mkdir(parents=True)
    for name in BUILD_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this session's paths (so nothing points into the checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    env.pop("SPIKELIGHT_DATA", None)
    env.update(extra)
    return env


def checkout_env() -> dict[str, str]:
    """A subprocess environment that imports this checkout's spikelight."""
    return clean_env(PYTHONPATH=str(REPO_ROOT / "src"))


def run_text(args: list[str], cwd: Path, env: dict, timeout: float = 300):
    """``args`` run in ``cwd`` with ``env``; the completed process, its output as text."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, cwd: Path, env: dict, python: str = sys.executable, timeout=120):
    result = run_text([python, "-c", textwrap.dedent(code)], cwd, env, timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def hydra_state():
    """A test that runs Hydra in this process leaves no run state behind for the others."""
    GlobalHydra.instance().clear()
    yield
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


# (a) the wheel --------------------------------------------------------------------------------


def test_wheel_holds_every_module_every_config_and_the_c_source(tmp_path):
    tree = copy_tree(tmp_path / "tree")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation"]
        + ["--quiet", "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("spikelight-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    modules = {
        f"spikelight/{p.relative_to(SOURCE).as_posix()}"
        for p in SOURCE.rglob("*")
        if p.suffix in (".py", ".c") and "__pycache__" not in p.parts
    }
    configs = {
        f"spikelight/conf/{p.relative_to(CONF).as_posix()}"
        for p in CONF.rglob("*")
        if p.suffix in (".yaml", ".py") and "__pycache__" not in p.parts
    }
    assert "spikelight/neurons/fused_native.c" in modules
    assert "spikelight/conf/train.yaml" in configs and len(configs) > 50
    assert sorted(modules - names) == []
    assert sorted(configs - names) == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "spikelight-train = spikelight.train:main" in text


# (b) the compose API in a fresh process -------------------------------------------------------

COMPOSE = """
    import json
    import spikelight  # registers the config resolvers and spikelight.conf
    import spikelight.conf
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("spikelight.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=shd", "data.channel_pool=7", "neuron=alif"])
    data, model = instantiate(cfg.data), instantiate(cfg.model)
    print(json.dumps({
        "conf": spikelight.conf.__file__,
        "data": type(data).__name__,
        "num_inputs": data.num_inputs,
        "model": type(model).__name__,
        "neuron": type(model.network.layers[0].neuron).__name__,
        "network_inputs": model.network.layers[0].fc.in_features,
        "output_dir": cfg.paths.output_dir,
        "default_root_dir": cfg.trainer.default_root_dir,
        "checkpoints": cfg.callbacks.last_checkpoint.dirpath,
    }))
"""


def compose_in_fresh_process(cwd: Path, env: dict, python: str = sys.executable) -> dict:
    result = run_python(COMPOSE, cwd, env, python)
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_composed(out: dict) -> None:
    built = (out["data"], out["model"], out["neuron"])
    assert built == ("SHDDataModule", "SpikingClassifier", "ALIF")
    # ${floordiv:700,${.channel_pool}} resolved by spikelight's resolver: 700 // 7
    assert out["num_inputs"] == out["network_inputs"] == 100
    # no Hydra run: this run's directory is the CLI's layout, under the working directory
    match = RUN_DIR.fullmatch(out["output_dir"].removeprefix("./"))
    assert match, out["output_dir"]
    assert abs((datetime.now() - datetime.fromisoformat(match[1])).days) <= 1
    assert out["default_root_dir"] == out["output_dir"]
    assert out["checkpoints"] == f"{out['output_dir']}/checkpoints"


def test_compose_api_in_a_fresh_process_builds_data_and_model(tmp_path):
    out = compose_in_fresh_process(tmp_path, checkout_env())
    check_composed(out)
    assert Path(out["conf"]) == CONF / "__init__.py"  # this checkout's configs
    assert not any(tmp_path.iterdir())  # composing and building write nothing


def test_a_checkout_uses_its_own_configs_even_with_another_on_the_path(tmp_path):
    """An editable install of another checkout maps spikelight.conf elsewhere (a meta path
    finder, as setuptools writes one); this checkout's src still reads this checkout's conf/."""
    other = tmp_path / "other_checkout" / "conf"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    code = f"""
        import importlib.util, sys

        class OtherCheckout:  # what setuptools' editable finder does for spikelight.conf
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name == "spikelight.conf":
                    init, folder = {str(other / "__init__.py")!r}, [{str(other)!r}]
                    return importlib.util.spec_from_file_location(
                        name, init, submodule_search_locations=folder
                    )

        sys.meta_path.append(OtherCheckout)
        import spikelight.conf
        from spikelight.configs import config_dir
        print(spikelight.conf.__file__, config_dir())
    """
    conf_file, folder = run_python(code, tmp_path, checkout_env()).stdout.split()
    assert (Path(conf_file), Path(folder)) == (CONF / "__init__.py", CONF)


# (c) a user's config folder on the search path ------------------------------------------------


def write_user_conf(root: Path) -> Path:
    """A user's folder: their own dataset (a variant of randman) and an experiment using it."""
    (root / "data").mkdir(parents=True)
    (root / "experiment").mkdir()
    (root / "data" / "tiny_randman.yaml").write_text(
        "defaults:\n  - randman\n  - _self_\nnum_classes: 3\nsamples_per_class: 4\n"
    )
    (root / "experiment" / "my_study.yaml").write_text(
        textwrap.dedent("""\
            # @package _global_
            defaults:
              - override /data: tiny_randman
              - override /neuron: alif
            seed: 123
            model:
              network:
                hidden: [17]
        """)
    )
    return root


def check_user_experiment(cfg: dict) -> None:
    assert cfg["seed"] == 123
    assert cfg["neuron"]["_target_"] == "spikelight.neurons.ALIF"
    assert cfg["data"]["_target_"] == "spikelight.data.randman.RandmanDataModule"
    assert (cfg["data"]["num_classes"], cfg["data"]["samples_per_class"]) == (3, 4)
    assert cfg["model"]["network"]["hidden"] == [17]


def test_user_config_dir_on_the_search_path_composes_their_experiment(tmp_path, hydra_state):
    user = write_user_conf(tmp_path / "my_conf")
    with initialize_config_module("spikelight.conf", version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hydra.searchpath=[file://{user}]", "experiment=my_study"]
        )
    check_user_experiment(OmegaConf.to_container(cfg))
    assert cfg.model.network.num_classes == 3  # ${data.num_classes} follows their dataset


def test_cli_config_dir_relative_to_the_working_directory_picks_up_their_experiment(
    tmp_path, monkeypatch, capsys, hydra_state
):
    write_user_conf(tmp_path / "my_conf")
    monkeypatch.chdir(tmp_path)
    args = ["--cfg", "job", "--config-dir", "my_conf", "experiment=my_study"]
    monkeypatch.setattr(sys, "argv", ["spikelight-train", *args])
    main()  # --cfg job: prints the composed config, trains nothing
    check_user_experiment(yaml.safe_load(capsys.readouterr().out))


def search_path(user: Path) -> list[dict]:
    return [
        {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
        {"path": "spikelight.conf", "schema": "pkg", "provider": "main"},
        {"path": str(user), "schema": "file", "provider": "command-line"},
        {"path": "", "schema": "structured", "provider": "schema"},
    ]


def test_user_configs_named_like_spikelights_are_found(tmp_path):
    user = write_user_conf(tmp_path / "my_conf")
    assert shadowed_configs(search_path(user)) == []
    (user / "data" / "randman.yaml").write_text("num_classes: 3\n")
    (user / "train.yaml").write_text("seed: 1\n")
    assert shadowed_configs(search_path(user)) == [
        ("--config-dir", str(user), ["data/randman.yaml", "train.yaml"])
    ]
    # before spikelight's package (a search-path plugin's prepend) they win: nothing hidden
    prepended = search_path(user)
    prepended.insert(1, prepended.pop(2))
    assert shadowed_configs(prepended) == []
    # spikelight's own conf/ added again hides nothing
    assert shadowed_configs(search_path(CONF)) == []


def test_a_user_config_hidden_by_spikelights_fails_the_config_check_naming_it(
    tmp_path, hydra_state
):
    user = write_user_conf(tmp_path / "my_conf")
    (user / "data" / "randman.yaml").write_text("num_classes: 3\n")
    with initialize_config_module("spikelight.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra.searchpath=[file://{user}]", "experiment=my_study"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # as in a run (the fixture unsets it)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    message = str(error.value)
    assert f"hydra.searchpath='{user}'" in message
    assert "data/randman.yaml" in message and "data/my_randman.yaml" in message


# optional plugins ----------------------------------------------------------------------------


def test_missing_plugin_names_the_option_and_the_extra(monkeypatch):
    assert missing_extra(["hydra/launcher=parallel", "seed=0,1"]) is None  # dev: installed
    monkeypatch.setitem(PLUGIN_OPTIONS, "hydra/launcher=parallel", ("no_such.plugin_x", "sweeps"))
    assert missing_extra(["-m", "seed=0,1", "hydra/launcher=parallel"]) == (
        "hydra/launcher=parallel needs plugin-x: pip install 'spikelight[sweeps]'"
    )
    assert missing_extra(["hydra.launcher.n_jobs=2", "hydra/launcher=basic"]) is None


def test_cli_without_the_launcher_plugin_fails_in_one_line_before_hydra(
    tmp_path, monkeypatch, capsys, hydra_state
):
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_joblib_launcher", None)  # missing
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["spikelight-train", "-m", "hydra/launcher=parallel"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "Error: hydra/launcher=parallel needs hydra-joblib-launcher: "
        "pip install 'spikelight[sweeps]'"
    )
    assert not any(tmp_path.iterdir())  # Hydra never started: no outputs/


# the fresh venv --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fresh_venv_install_trains_from_an_empty_directory(tmp_path):
    """``pip install torch==2.13.0 && pip install .`` into a new venv, then, from an empty
    directory: ``spikelight-train trainer.max_epochs=1`` writes its run under ``./outputs``,
    the compose API works, a user's experiment is picked up and a missing extra is named."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, train = str(venv / "bin" / "python"), str(venv / "bin" / "spikelight-train")
    env = clean_env()
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, env=env, timeout=1800)
    subprocess.run([*pip, str(copy_tree(tmp_path / "tree"))], check=True, env=env, timeout=1800)

    work = tmp_path / "empty"
    work.mkdir()
    result = run_text([train, "trainer.max_epochs=1"], work, env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (work / "outputs" / "runs").iterdir()
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_epochs"] == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    out = compose_in_fresh_process(work, env, python)
    check_composed(out)
    assert Path(out["conf"]).is_relative_to(venv)  # the installed copy, not the checkout

    write_user_conf(work / "my_conf")
    shown = run_text(
        [train, "--cfg", "job", "--config-dir", "my_conf", "experiment=my_study"], work, env
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    check_user_experiment(yaml.safe_load(shown.stdout))

    missing = run_text([train, "-m", "hydra/launcher=parallel", "seed=0,1"], work, env)
    assert missing.returncode == 2
    assert "pip install 'spikelight[sweeps]'" in missing.stderr
