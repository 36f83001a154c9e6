"""ampstudy: find the best neural model of a SPICE-simulated Fender Bassman 5F6-A preamp.

This package is the top layer: the `ampstudy` command line. See docs/ARCHITECTURE.md for the layers.
"""

from foundation import __version__  # noqa: F401  (the one version string lives in the foundation)
