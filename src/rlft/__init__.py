"""rlft: fine-tune language models with reinforcement learning.

``import rlft`` stays light: torch, transformers and the heavy backends load only in the modules
that use them.
"""

__version__ = "0.1.0"
