"""vitreg: the reproducible companion to "Vision Transformers Need Registers" (Darcet et al., ICLR 2024).

Import the modules you need (``from vitreg.weights import load_model``); importing the package itself
loads nothing heavy and changes no global state.
"""

__version__ = "0.1.0"
