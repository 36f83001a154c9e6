"""The bottom layer: what every other package of ampstudy may import (errors, config helpers, the version).

It imports nothing of ampstudy and nothing heavier than the standard library.
"""

__version__ = "0.1.0"
