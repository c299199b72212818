"""scripts/stream_shd.py on a generated SHD-layout file and a tiny checkpoint trained on it."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch

from spikelight.data import shd
from spikelight.train import train
from tests.conftest import REPO_ROOT, compose_config
from tests.data_fixtures import make_shd_files, make_shd_samples, write_shd_h5

STEPS, POOL, MAX_TIME = 20, 10, 1.4


def _load_script():
    path = REPO_ROOT / "scripts" / "stream_shd.py"
    spec = importlib.util.spec_from_file_location("spikelight_stream_shd_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stream_shd = _load_script()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained one short epoch on generated SHD files: (run dir, test file, its truth)."""
    root = tmp_path_factory.mktemp("stream_shd")
    truth = make_shd_files(root / "shd", n_train=40, n_test=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shd, "CHECKSUMS", {})  # generated files are not the published ones
        cfg = compose_config(
            [
                "experiment=shd",
                f"data.data_dir={root / 'shd'}",
                f"data.cache_dir={root / 'cache'}",
                "data.download=false",
                "data.batch_size=16",
                f"data.num_steps={STEPS}",
                f"data.channel_pool={POOL}",
                "model.network.hidden=[16]",
                "debug=limit",
                "trainer.max_epochs=1",
                "trainer.accelerator=cpu",
                "callbacks.progress_bar.refresh_rate=0",
            ],
            output_dir=root / "run",
        )
        train(cfg)
    return root / "run", root / "shd" / "shd_test.h5", truth["test"]


def test_chunks_hold_the_bins_the_data_module_trains_on(run):
    _, _, truth = run
    expected = truth.dense(STEPS, POOL)  # counted from the generator's own bins
    for sample, (times, units) in enumerate(zip(truth.times, truth.units, strict=True)):
        chunks = list(stream_shd.sample_chunks(times, units, STEPS, MAX_TIME, POOL, chunk=7))
        assert [c.shape for c in chunks] == [(7, 70), (7, 70), (6, 70)]
        assert np.array_equal(np.concatenate(chunks), expected[sample]), sample


def test_streamed_predictions_are_the_whole_sequence_ones(run, capsys):
    run_dir, test_file, truth = run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    result = stream_shd.main([str(checkpoint), str(test_file), "--chunk", "7"])
    captured = capsys.readouterr()

    # the whole sequences, densified from the truth, through the network's training forward
    network, _ = stream_shd.load_run(checkpoint, None)
    x = torch.from_numpy(truth.dense(STEPS, POOL)).float().transpose(0, 1)
    with torch.no_grad():
        logits = network(x).logits
    assert result["labels"] == truth.labels.tolist()
    torch.testing.assert_close(torch.tensor(result["scores"]), logits, rtol=0, atol=1e-4)
    assert result["predictions"] == logits.argmax(1).tolist()

    lines = [line for line in captured.out.splitlines() if line.startswith("sample ")]
    assert len(lines) == 12
    for n, line in enumerate(lines, start=1):
        label, predicted, correct, seen = map(
            int, re.search(r"label (\d+) predicted (\d+) .*\((\d+)/(\d+)\)", line).groups()
        )
        assert (label, predicted, seen) == (truth.labels[n - 1], result["predictions"][n - 1], n)
        right = sum(
            p == y for p, y in zip(result["predictions"][:n], truth.labels[:n], strict=True)
        )
        assert correct == right
    assert f"accuracy {right / 12:.4f} over 12 samples" in captured.out
    assert "12/12" in captured.err  # the progress bar


def test_limit_streams_the_first_samples(run, capsys):
    run_dir, test_file, truth = run
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    threads = torch.get_num_threads()
    argv = [str(checkpoint), str(test_file), "--limit", "3", "--chunk", "1", "--threads", "2"]
    result = stream_shd.main(argv)
    assert torch.get_num_threads() == threads  # the script's setting does not outlive it
    assert result["labels"] == truth.labels[:3].tolist()
    assert "over 3 samples" in capsys.readouterr().out


def test_bad_arguments_get_one_line_errors(run, tmp_path, capsys):
    run_dir, test_file, _ = run
    lone = tmp_path / "lone" / "checkpoints" / "last.ckpt"  # a run directory without config
    lone.parent.mkdir(parents=True)
    lone.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(FileNotFoundError, match="run directory.* pass the run's config.yaml"):
        stream_shd.main([str(lone), str(test_file)])
    other = tmp_path / "config.yaml"
    other.write_text((run_dir / "config.yaml").read_text().replace("shd.SHDDataModule", "x.Y"))
    with pytest.raises(ValueError, match=r"data._target_ is 'spikelight.data.x.Y'.*data=shd"):
        stream_shd.main([str(lone), str(test_file), "--config", str(other)])
    broken = write_shd_h5(tmp_path / "broken.h5", make_shd_samples(3), omit=("labels",))
    assert stream_shd.cli([str(run_dir / "checkpoints" / "last.ckpt"), str(broken)]) == 2
    assert "has no dataset 'labels'" in capsys.readouterr().err
    assert stream_shd.cli([str(lone), str(test_file)]) == 2
    assert capsys.readouterr().err.startswith(
        f"Error: config '{tmp_path / 'lone' / 'config.yaml'}'"
    )
