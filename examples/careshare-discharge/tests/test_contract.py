"""careshare's contract kit, unchanged, against this channel."""

from careshare.testing.contract import *  # noqa: F403

careshare_plugins = ["discharge"]
