"""spikelight: train spiking neural networks with surrogate gradients (Lightning + Hydra).

Importing it registers the config resolvers and the config package ``spikelight.conf``, so a
notebook composes the training config with Hydra's compose API (see README, "Configs in Python").
"""

from spikelight.configs import register_checkout_conf
from spikelight.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
register_checkout_conf()
