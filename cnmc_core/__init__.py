"""cnmc_core: train, evaluate and explain seven Keras transfer models on C-NMC 2019 (ALL vs HEM).

Importing the package does not import TensorFlow; the modules that need it import it themselves.
"""

__version__ = "0.1.0"
