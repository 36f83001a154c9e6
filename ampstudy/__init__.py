"""ampstudy: find the best neural model of a SPICE-simulated Fender Bassman 5F6-A preamp."""

__version__ = "0.1.0"
