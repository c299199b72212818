"""``python -m spikelight.nir`` on the checkpoint of a real (tiny, one-epoch) run; missing nir."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from spikelight.nir import MISSING_NIR
from spikelight.nir.__main__ import main
from spikelight.train import train
from tests.conftest import REPO_ROOT, compose_config

TINY_RUN = [
    "debug=limit",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "test=false",
    "data.samples_per_class=10",
    "data.num_steps=20",
    "data.batch_size=16",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "neuron.reset=zero",  # NIR's reset (the default, subtract, has no NIR counterpart)
    "model.network.hidden=[12]",
    "model.network.recurrent=true",
]


def nir_cli(*args: str, code: str | None = None):
    """``python -m spikelight.nir *args`` (or ``python -c code``), from the repository root."""
    command = ["-c", code] if code else ["-m", "spikelight.nir", *args]
    return subprocess.run(
        [sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("nir")
    run_dir = tmp_path_factory.mktemp("nir_run")
    train(compose_config(TINY_RUN, output_dir=run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def effective_weights(state: dict, prefix: str) -> torch.Tensor:
    """A weight as the checkpoint stores it: plain, or in units of its row scale (RowScale)."""
    if f"{prefix}.weight" in state:
        return state[f"{prefix}.weight"]
    original = state[f"{prefix}.parametrizations.weight.original"]
    return original * state[f"{prefix}.parametrizations.weight.0.scale"]


def test_export_writes_the_checkpoints_network(checkpoint, tmp_path, capsys):
    nir = pytest.importorskip("nir")
    from spikelight.nir import import_network, load_network

    out = tmp_path / "model.nir"
    assert main(["export", str(checkpoint), str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 7 nodes, dt=0.001 s")
    graph = nir.read(out)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for node, key in [
        ("hidden0_fc", "network.layers.0.fc"),
        ("hidden0_rec", "network.layers.0.rec"),
        ("readout_fc", "network.readout_fc"),
    ]:
        expected = effective_weights(state, key).double().numpy()
        assert graph.nodes[node].weight.shape == expected.shape
        assert (graph.nodes[node].weight == expected).all(), node
    assert float(graph.metadata["dt"]) == 1e-3

    trained, back = load_network(checkpoint), import_network(graph)
    x = (torch.rand(20, 4, 100, generator=torch.Generator().manual_seed(0)) < 0.1).float()
    with torch.no_grad():
        mine, theirs = trained(x), back(x)
    assert mine.spikes["hidden0"].sum() > 0
    assert torch.equal(theirs.spikes["hidden0"], mine.spikes["hidden0"])
    torch.testing.assert_close(theirs.logits, mine.logits, rtol=1e-5, atol=1e-6)

    shown = nir_cli("show", str(out))  # the module entry point, in its own process
    assert shown.returncode == 0, shown.stderr
    assert "hidden0: CubaLIF [12]" in shown.stdout
    assert (
        "imports into spikelight: LIF 100-12-10, recurrent, dt=0.001 s, decoding=max_membrane"
        in shown.stdout
    )


def test_export_of_what_nir_cannot_express_is_one_line_and_no_file(checkpoint, tmp_path, capsys):
    config = OmegaConf.load(checkpoint.parent.parent / "config.yaml")
    config.model.network.neuron.reset = "subtract"
    OmegaConf.save(config, tmp_path / "subtract.yaml")
    out = tmp_path / "model.nir"
    assert (
        main(["export", str(checkpoint), str(out), "--config", str(tmp_path / "subtract.yaml")])
        == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        "Error: layer hidden0: neuron.reset=subtract cannot be expressed in NIR's CubaLIF "
        "(reset to v_reset); train with neuron.reset=zero"
    ]
    assert list(tmp_path.iterdir()) == [tmp_path / "subtract.yaml"]  # no file, partial or not


def test_export_of_a_missing_checkpoint_or_config(tmp_path, capsys):
    pytest.importorskip("nir")
    assert main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "model.nir")]) == 2
    missing = str(tmp_path / "nope.ckpt")
    assert capsys.readouterr().err == f"Error: checkpoint {missing!r} does not exist\n"
    lonely = tmp_path / "run" / "checkpoints" / "last.ckpt"
    lonely.parent.mkdir(parents=True)
    lonely.write_bytes(b"")
    assert main(["export", str(lonely), str(tmp_path / "model.nir")]) == 2
    error = capsys.readouterr().err
    assert "config.yaml' (of the checkpoint's run directory) does not exist" in error
    assert "pass the run's config.yaml (--config)" in error


def test_missing_nir_is_one_line_naming_the_extra(monkeypatch):
    code = (
        "import runpy, sys; sys.modules['nir'] = None; "  # as if nir were not installed
        "sys.argv = ['spikelight.nir', 'export', 'a.ckpt', 'b.nir']; "
        "runpy.run_module('spikelight.nir', run_name='__main__')"
    )
    done = nir_cli(code=code)
    assert done.returncode == 2
    assert done.stderr == f"Error: {MISSING_NIR}\n"
    assert MISSING_NIR == "spikelight.nir needs the nir package: pip install 'spikelight[nir]'"

    monkeypatch.setitem(sys.modules, "nir", None)
    for name in [m for m in sys.modules if m.startswith("spikelight.nir.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ModuleNotFoundError, match=r"^spikelight.nir needs the nir package"):
        from spikelight.nir import export_network  # noqa: F401
