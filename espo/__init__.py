"""espo: reinforcement learning for diffusion language models."""

from espo import _moved

_moved.install()  # saved configs and checkpoints that name a module by its pre-layering path still load

__version__ = "0.1.0"
