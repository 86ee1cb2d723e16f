"""The package version, in a module of its own so no module has to import the package face for it."""

__version__ = "0.2.0"
