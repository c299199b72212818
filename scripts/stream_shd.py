"""Classify an SHD-layout HDF5 file sample by sample with a trained network, as a stream.

    python scripts/stream_shd.py outputs/runs/<time>/checkpoints/last.ckpt data/shd/shd_test.h5
    python scripts/stream_shd.py CKPT FILE --chunk 5 --limit 200 --config RUN/config.yaml

The network and the binning come from the run's ``config.yaml`` (default: the one in the run
directory above ``checkpoints/``), the weights from the checkpoint. Each sample's events are binned
as training binned them (``data.num_steps`` bins over ``data.max_time`` seconds, channels pooled by
``data.channel_pool``) into chunks of ``--chunk`` bins; each chunk, once its last bin is over, goes
through ``SpikingNetwork.stream``, which carries the network's state on to the next chunk. After
the sample's last chunk the scores are those of the whole sequence; the prediction is their
argmax. Prints one line per sample (label, prediction, running accuracy) and a progress bar.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from spikelight import checkpoint_io
from spikelight.data.shd import NUM_CHANNELS, event_bins, read_samples, sample_count

SHD_TARGET = "spikelight.data.shd.SHDDataModule"


def sample_chunks(
    times: np.ndarray,
    units: np.ndarray,
    num_steps: int,
    max_time: float,
    channel_pool: int,
    chunk: int,
) -> Iterator[np.ndarray]:
    """One sample's event counts ``[t, 700 // pool]`` in consecutive chunks of ``chunk`` bins.

    Chunk ``k`` holds the events whose bin (:func:`spikelight.data.shd.event_bins`, the rule the
    data module bins with) lies in its bins; all ``num_steps`` bins are covered, empty or not.
    """
    bins = event_bins(times, num_steps, max_time)
    channels = np.asarray(units, dtype=np.int64) // channel_pool
    for start in range(0, num_steps, chunk):
        stop = min(start + chunk, num_steps)
        counts = np.zeros((stop - start, NUM_CHANNELS // channel_pool), dtype=np.float32)
        arrived = (bins >= start) & (bins < stop)
        np.add.at(counts, (bins[arrived] - start, channels[arrived]), 1.0)
        yield counts


def load_run(checkpoint: Path, config: Path | None):
    """``(SpikingNetwork in eval mode, data config)`` of a run trained on SHD."""
    network, cfg = checkpoint_io.load_run(checkpoint, config)
    target = OmegaConf.select(cfg, "data._target_")
    if target != SHD_TARGET:
        raise ValueError(
            f"the run's data._target_ is {target!r}; this script streams SHD files, so the run "
            f"must have trained on {SHD_TARGET} (data=shd)"
        )
    return network, cfg.data


def classify(network, data_cfg, path: Path, chunk: int, limit: int | None, device: str) -> dict:
    """Stream every sample of ``path`` (the first ``limit``): labels, class scores, predictions
    and accuracy."""
    network = network.to(device)
    dtype = network.readout_fc.weight.dtype
    total = sample_count(path, data_cfg.num_classes)
    total = total if limit is None else min(limit, total)
    labels, predictions, scores, correct = [], [], [], 0
    with (
        closing(read_samples(path, data_cfg.num_classes)) as samples,  # closed at a --limit too
        tqdm(total=total, desc="streaming", unit="sample", file=sys.stderr) as bar,
    ):
        for index, (times, units, label) in enumerate(samples):
            if index == total:
                break
            state = network.init_state(1)
            for counts in sample_chunks(
                times,
                units,
                data_cfg.num_steps,
                data_cfg.max_time,
                data_cfg.channel_pool,
                chunk,
            ):
                x = torch.from_numpy(counts).to(device=device, dtype=dtype)[:, None, :]
                output, state = network.stream(x, state)
            scores.append(output.logits[0].tolist())
            predictions.append(int(output.logits.argmax(1)))
            labels.append(label)
            correct += predictions[-1] == label
            bar.write(
                f"sample {index}: label {label} predicted {predictions[-1]} "
                f"{'right' if predictions[-1] == label else 'wrong'}; running accuracy "
                f"{correct / len(labels):.4f} ({correct}/{len(labels)})",
                file=sys.stdout,
            )
            bar.update()
    accuracy = correct / len(labels) if labels else float("nan")
    print(f"accuracy {accuracy:.4f} over {len(labels)} samples")
    return {"labels": labels, "predictions": predictions, "scores": scores, "accuracy": accuracy}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of a run trained with data=shd")
    parser.add_argument("data", type=Path, help="an HDF5 file in the SHD layout")
    parser.add_argument("--config", type=Path, help="the run's config.yaml (default: found)")
    parser.add_argument("--chunk", type=positive_int, default=10, help="bins per chunk (10)")
    parser.add_argument("--limit", type=positive_int, help="stream only the first N samples")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads (1: tensors are small)"
    )
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise FileNotFoundError(f"data file {args.data} does not exist")
    network, data_cfg = load_run(args.checkpoint, args.config)
    # One sample's per-step tensors are far too small to share between threads; with two,
    # OpenMP's waiting made 1200 SHD samples take 472 s instead of 16 s on a loaded 2-core CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return classify(network, data_cfg, args.data, args.chunk, args.limit, args.device)
    finally:
        torch.set_num_threads(threads)


def cli(argv: list[str] | None = None) -> int:
    """:func:`main`; a bad file or argument is one line on stderr and exit status 2."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError) as error:  # SHDFormatError, ConfigError included
        print(f"Error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
