"""geodiff QGIS plugin: a Processing provider that runs the geodiff command-line tool.

Nothing here imports geodiff itself: QGIS runs on its own Python, geodiff (torch, rasterio...) lives in a
separate environment and is called as a subprocess.
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    # Imported lazily so QGIS can read the plugin list without loading Processing.
    from .plugin import GeodiffPlugin

    return GeodiffPlugin(iface)
