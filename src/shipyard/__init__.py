"""shipyard: deploy a multi-component application as one unit."""

__version__ = "0.1.0"
