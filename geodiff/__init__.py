"""geodiff: synthetic, georeferenced aerial imagery from OpenStreetMap.

The library core lives in small modules (``classes``, ``grid``, ``osm``, ``rasterize``, ``io``, ``model``,
``pipeline``, ``synth``); the CLI (``geodiff.cli``) and the QGIS plugin are thin layers over it.
"""

__version__ = "0.1.0"

ATTRIBUTION = "Map data (c) OpenStreetMap contributors, ODbL"
