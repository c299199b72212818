"""``python -m spikelight.nir`` (or ``spikelight-nir``): export a checkpoint, inspect a NIR file.

    python -m spikelight.nir export outputs/runs/<run>/checkpoints/last.ckpt model.nir
    python -m spikelight.nir show model.nir

``show`` lists the graph's nodes and says whether spikelight imports it (and as what).
Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spikelight.nir", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a checkpoint's network as a NIR file")
    export.add_argument("ckpt", help="a training checkpoint (<run>/checkpoints/*.ckpt)")
    export.add_argument("out", help="the NIR file to write (e.g. model.nir)")
    export.add_argument("--config", help="the run's config.yaml (default: <run>/config.yaml)")
    show = commands.add_parser("show", help="list a NIR file's nodes; does spikelight import it?")
    show.add_argument("file", help="a NIR file")
    show.add_argument("--dt", type=float, help="time step in seconds (default: the file's)")
    return parser


def _describe(node) -> str:
    shape = {k: [int(s) for s in v] for k, v in (node.output_type or {}).items()}
    return f"{type(node).__name__} {shape.get('output', '')}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from spikelight.nir import export_checkpoint, import_network, require_nir

        nir = require_nir()
        if args.command == "export":
            graph = export_checkpoint(args.ckpt, args.out, args.config)
            print(
                f"wrote {args.out}: {len(graph.nodes)} nodes, dt={graph.metadata['dt']:g} s, "
                f"decoding={graph.metadata['decoding']} (applied to the output over time)"
            )
            return 0
        if not Path(args.file).is_file():
            raise FileNotFoundError(f"NIR file {args.file!r} does not exist")
        graph = nir.read(args.file)
        for name, node in graph.nodes.items():
            print(f"{name}: {_describe(node)}")
        metadata = {k: v.item() if hasattr(v, "item") else v for k, v in graph.metadata.items()}
        print(f"metadata: {metadata}")
        network = import_network(graph, dt=args.dt)
        kind = type(network.layers[0].neuron).__name__
        sizes = [network.layers[0].fc.in_features, *(layer.neuron.size for layer in network.layers)]
        sizes = "-".join(str(n) for n in [*sizes, network.readout_fc.out_features])
        recurrent = "recurrent" if network.layers[0].rec is not None else "feed-forward"
        print(
            f"imports into spikelight: {kind} {sizes}, {recurrent}, dt={network.dt:g} s, "
            f"decoding={network.decoding}"
        )
        return 0
    except (ModuleNotFoundError, ValueError, FileNotFoundError, OSError) as error:
        if isinstance(error, ModuleNotFoundError) and error.name != "nir":
            raise
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
