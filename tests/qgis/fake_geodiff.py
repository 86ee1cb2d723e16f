"""A stand-in for the geodiff CLI: speaks its --progress json protocol and writes small GeoTIFFs.

Runs under Debian's Python (standard library + GDAL's bindings, which come with QGIS). Behaviour by environment:
FAKE_GEODIFF_MODE = ok (default) | sleep (reports once, then sleeps; FAKE_GEODIFF_PID gets its pid) |
stubborn (like sleep, and ignores SIGTERM) | error ('Error: ...', exit 2) | crash (traceback, exit 1).
FAKE_GEODIFF_ARGS: file that receives the arguments of the last run as JSON (a ``--dry-run`` goes to
``<file>.dry``); FAKE_GEODIFF_WINDOWS: the window count a dry run reports (default 4).
"""

import argparse
import json
import os
import signal
import sys
import time


def emit(**fields):
    sys.stderr.write(json.dumps(fields) + "\n")
    sys.stderr.flush()


def write_tif(path, bbox, crs, bands, value):
    from osgeo import gdal, osr

    gdal.UseExceptions()
    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    w, s, e, n = bbox
    size = 16
    ds = gdal.GetDriverByName("GTiff").Create(path, size, size, bands, gdal.GDT_Byte)
    ds.SetGeoTransform((w, (e - w) / size, 0, n, 0, -(n - s) / size))
    ds.SetProjection(srs.ExportToWkt())
    for b in range(1, bands + 1):
        ds.GetRasterBand(b).Fill(value + b)
    ds = None


def write_class_qml(raster):
    """The class-map style geodiff writes beside a semantic map (``map.tif`` -> ``map.qml``)."""
    entries = "".join(
        f'<paletteEntry value="{c["id"]}" color="#{c["color"][0]:02x}{c["color"][1]:02x}{c["color"][2]:02x}" '
        f'alpha="255" label="{c["name"]}"/>'
        for c in CLASSES
    )
    with open(os.path.splitext(raster)[0] + ".qml", "w") as f:
        f.write('<!DOCTYPE qgis><qgis version="3.22" styleCategories="Symbology"><pipe>'
                '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">'
                f"<colorPalette>{entries}</colorPalette></rasterrenderer></pipe></qgis>")  # fmt: skip


CLASSES = [{"id": 0, "name": "background", "color": [214, 200, 160]},
           {"id": 1, "name": "building", "color": [192, 57, 43]},
           {"id": 2, "name": "road", "color": [127, 140, 141]},
           {"id": 3, "name": "water", "color": [46, 134, 193]},
           {"id": 4, "name": "vegetation", "color": [39, 174, 96]}]  # fmt: skip


def augment(args):
    """Tiles side by side across the area (or the windows' bounds), in lon/lat, with a manifest as geodiff's."""
    if args.windows:
        with open(args.windows) as f:
            rings = [ft["geometry"]["coordinates"][0] for ft in json.load(f)["features"]]
        boxes = [(min(p[0] for p in r), min(p[1] for p in r), max(p[0] for p in r), max(p[1] for p in r))
                 for r in rings]  # fmt: skip
    else:
        w, s, e, n = (float(v) for v in args.area.split(","))
        count = int(args.n_windows)
        step = (e - w) / count
        boxes = [(w + i * step, s, w + (i + 1) * step, n) for i in range(count)]
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    samples = []
    for i, box in enumerate(boxes):
        for k in range(int(args.seeds_per_window or 1)):
            sid = f"w{i:05d}_s{k}"
            image, mask = f"images/{sid}.{args.format}", f"masks/{sid}.{args.format}"
            write_tif(os.path.join(args.out, image), box, "EPSG:4326", 3, 100)
            write_tif(os.path.join(args.out, mask), box, "EPSG:4326", 1, 0)
            samples.append({"id": sid, "image": image, "mask": mask, "crs": "EPSG:4326"})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"format": "geodiff-paired-dataset-1", "classes": CLASSES, "n_samples": len(samples),
                   "samples": samples}, f)  # fmt: skip
    emit(progress=1.0, message="done")
    return 0


def change(args):
    """``geodiff change``: after image, its semantic map and the change mask on the before image's grid."""
    from osgeo import gdal

    gdal.UseExceptions()
    src = gdal.Open(args.before)
    for path, bands in ((args.out, 3), (args.mask_out, 1), (args.change_out, 1)):
        ds = gdal.GetDriverByName("GTiff").Create(
            path, src.RasterXSize, src.RasterYSize, bands, gdal.GDT_Byte
        )
        ds.SetGeoTransform(src.GetGeoTransform())
        ds.SetProjection(src.GetProjection())
        ds = None
    write_class_qml(args.mask_out)
    with open(os.path.splitext(args.change_out)[0] + ".qml", "w") as f:
        f.write('<!DOCTYPE qgis><qgis version="3.22" styleCategories="Symbology"><pipe>'
                '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1"><colorPalette>'
                '<paletteEntry value="0" color="#000000" alpha="0" label="unchanged"/>'
                '<paletteEntry value="2" color="#c0392b" alpha="255" label="background -> building"/>'
                "</colorPalette></rasterrenderer></pipe></qgis>")  # fmt: skip
    emit(progress=1.0, message="done")
    return 0


def main():
    mode = os.environ.get("FAKE_GEODIFF_MODE", "ok")
    if sys.argv[1:2] == ["--version"]:
        print("geodiff, version 9.8.7")
        return 0
    if sys.argv[1:3] == ["models", "--json"]:
        print(json.dumps({"models": [{"name": "geodiff-default", "default": True},
                                     {"name": "my-region", "default": False}]}))  # fmt: skip
        return 0
    if os.environ.get("FAKE_GEODIFF_ARGS"):
        dry = "--dry-run" in sys.argv
        with open(os.environ["FAKE_GEODIFF_ARGS"] + (".dry" if dry else ""), "w") as f:
            json.dump(sys.argv[1:], f)
        import stat

        # how the plugin ties geodiff's life to its own: the stdin pipe geodiff watches (see geodiff.cli)
        with open(os.environ["FAKE_GEODIFF_ARGS"] + ".stdin", "w") as f:
            json.dump({"env": os.environ.get("GEODIFF_EXIT_WITH_STDIN"),
                       "pipe": stat.S_ISFIFO(os.fstat(0).st_mode)}, f)  # fmt: skip

    parser = argparse.ArgumentParser(prog="geodiff")
    parser.add_argument("command", choices=["rasterize", "synth", "augment", "change"])
    for opt in (
        "--bbox",
        "--bbox-crs",
        "--osm",
        "--vector",
        "--class-field",
        "--resolution",
        "--out",
        "--mask-out",
        "--model",
        "--seed",
        "--steps",
        "--device",
        "--progress",
        "--crs",
        "--area",
        "--windows",
        "--n-windows",
        "--min-labeled",
        "--seeds-per-window",
        "--format",
        "--threads",
        "--guidance-scale",
        "--quality",
        "--runtime",
        "--before",
        "--edits",
        "--map",
        "--change-out",
        "--margin",
    ):
        parser.add_argument(opt)
    for flag in ("--overwrite", "--no-mask", "--dry-run", "--allow-empty", "--changes"):
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args()

    if args.dry_run:
        windows = int(os.environ.get("FAKE_GEODIFF_WINDOWS", "4"))
        print(json.dumps({"event": "plan", "width": 157, "height": 159, "resolution_m": 1.0, "crs": "EPSG:32635",
                          "windows": windows, "steps": 20, "device": "cpu", "seconds_estimate": 5.0 * windows}))  # fmt: skip
        return 0

    if args.command == "synth" and mode == "slowplan":  # geodiff times the model before its plan event
        with open(os.environ["FAKE_GEODIFF_PID"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    if args.command == "synth":  # the plan is the first event of a real run, as geodiff sends it
        windows = int(os.environ.get("FAKE_GEODIFF_WINDOWS", "4"))
        emit(event="plan", width=157, height=159, resolution_m=1.0, crs="EPSG:32635", windows=windows, steps=20,
             device="cpu", seconds_estimate=5.0 * windows, quality=args.quality)  # fmt: skip
    if mode == "planerror":
        sys.stderr.write("Error: --resolution 5 does not match the model's 1 m/px: leave --resolution out\n")
        return 2
    if mode in ("sleep", "stubborn"):
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(os.environ["FAKE_GEODIFF_PID"], "w") as f:
            f.write(str(os.getpid()))
        emit(progress=0.01, message="loading model")
        time.sleep(120)
        return 0
    if mode == "error":
        emit(progress=0.1, message="reading OSM")
        sys.stderr.write("Error: the bbox lies outside the OSM file's bounds: pass a bbox inside it\n")
        return 2
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\nRuntimeError: something broke\n")
        return 1

    if mode == "empty":
        sys.stderr.write(
            "Error: no features fall inside the bbox; pass --allow-empty to write an empty map\n"
        )
        return 4
    if args.vector and not os.path.isfile(args.vector):
        sys.stderr.write(f"Error: vector file not found: {args.vector}\n")
        return 2
    if args.command == "augment":
        return augment(args)
    if args.command == "change":
        return change(args)
    bbox = [float(v) for v in args.bbox.split(",")]
    if args.command == "synth":
        emit(event="device", device="cpu", dtype="float32")
    for i in range(1, 5):
        emit(progress=i / 5, message=f"step {i}/4", eta_s=0.1 * (4 - i))
    print("some plain output on stdout")
    if args.command == "synth":
        write_tif(args.out, bbox, args.bbox_crs, 3, 100)
        if args.mask_out:
            write_tif(args.mask_out, bbox, args.bbox_crs, 1, 0)
            write_class_qml(args.mask_out)
    else:
        write_tif(args.out, bbox, args.bbox_crs, 1, 0)
        write_class_qml(args.out)
    emit(progress=1.0, message="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
