"""spikelight's Hydra configs, importable as ``spikelight.conf`` (Hydra's ``pkg://spikelight.conf``).

Hydra reads a config package only when it has this file; the wheel ships this folder as
``spikelight/conf`` (see pyproject.toml and :mod:`spikelight.configs`).
"""
