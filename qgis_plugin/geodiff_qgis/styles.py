"""Style and name the layers Processing loads when an algorithm finishes (dialog runs, runAndLoadResults).

Processing opens an output itself, and then a ``.qml`` beside the file is not applied (only Add Raster Layer does
that): the class map would show 256 unnamed palette entries. A post-processor applies it, as core algorithms do.
"""

from pathlib import Path
from xml.sax.saxutils import quoteattr

from qgis.core import QgsProcessingLayerPostProcessorInterface

# Post-processors must outlive the algorithm run that created them (Processing calls them later, on the main
# thread): keep a reference to each one. They are a few bytes; a session creates a handful.
_KEEP = []

_QML_HEAD = (
    "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    '<qgis version="3.22" styleCategories="Symbology">\n  <pipe>\n'
)
_QML_TAIL = "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"


def sidecar(path):
    """``area.mask.tif`` -> ``area.mask.qml``: the style geodiff writes beside each raster."""
    return Path(path).with_suffix(".qml")


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Names the loaded layer and applies a ``.qml`` style file to it."""

    def __init__(self, name, qml):
        super().__init__()
        self.name = name
        self.qml = str(qml) if qml else None

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        if self.name:
            layer.setName(self.name)
        if self.qml and Path(self.qml).is_file():
            message, ok = layer.loadNamedStyle(self.qml)
            if not ok and feedback is not None:
                feedback.reportError(f"Could not apply the style {self.qml}: {message}")
            layer.triggerRepaint()


def style_on_load(context, path, name, qml=None):
    """If Processing will load ``path`` when the run ends, name it ``name`` and style it with ``qml`` (default:
    the ``.qml`` beside it). Returns the post-processor, or None when the output is not loaded."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return None
    processor = StyleOnLoad(name, qml or sidecar(path))
    _KEEP.append(processor)
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
    return processor


def class_map_qml(classes):
    """A paletted style: one named, coloured entry per class of ``[{"id", "name", "color": [r, g, b]}]`` (the
    class table of geodiff's manifest.json), plus 255 = ignore, transparent."""
    entries = "".join(
        f'        <paletteEntry value="{int(c["id"])}" color="#{int(c["color"][0]):02x}{int(c["color"][1]):02x}'
        f'{int(c["color"][2]):02x}" alpha="255" label={quoteattr(str(c["name"]))}/>\n'
        for c in classes
    )
    entries += '        <paletteEntry value="255" color="#000000" alpha="0" label="ignore"/>\n'
    return (
        _QML_HEAD
        + '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        + "      <rasterTransparency/>\n      <colorPalette>\n"
        + entries
        + "      </colorPalette>\n    </rasterrenderer>\n"
        + _QML_TAIL
    )


def rgb_qml():
    """The RGB bands shown as they are (0-255), not stretched to each band's min/max."""
    bands = "".join(
        f"      <{name}ContrastEnhancement><minValue>0</minValue><maxValue>255</maxValue>"
        f"<algorithm>NoEnhancement</algorithm></{name}ContrastEnhancement>\n"
        for name in ("red", "green", "blue")
    )
    return (
        _QML_HEAD
        + '    <rasterrenderer type="multibandcolor" redBand="1" greenBand="2" blueBand="3" opacity="1" '
        + 'alphaBand="-1" nodataColor="">\n      <rasterTransparency/>\n'
        + bands
        + "    </rasterrenderer>\n"
        + _QML_TAIL
    )
