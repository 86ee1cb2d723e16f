"""Plugin entry: registers the geodiff Processing provider (GUI and qgis_process)."""

from qgis.core import QgsApplication


class GeodiffPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (called by QGIS and qgis_process)
        from .provider import GeodiffProvider

        if self.provider is None:
            self.provider = GeodiffProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
