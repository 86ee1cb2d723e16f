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


def main():
    mode = os.environ.get("FAKE_GEODIFF_MODE", "ok")
    if sys.argv[1:3] == ["models", "--json"]:
        print(json.dumps({"models": [{"name": "geodiff-default", "default": True},
                                     {"name": "my-region", "default": False}]}))  # fmt: skip
        return 0
    if os.environ.get("FAKE_GEODIFF_ARGS"):
        dry = "--dry-run" in sys.argv
        with open(os.environ["FAKE_GEODIFF_ARGS"] + (".dry" if dry else ""), "w") as f:
            json.dump(sys.argv[1:], f)

    parser = argparse.ArgumentParser(prog="geodiff")
    parser.add_argument("command", choices=["rasterize", "synth", "augment"])
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
    ):
        parser.add_argument(opt)
    for flag in ("--overwrite", "--no-mask", "--dry-run", "--allow-empty"):
        parser.add_argument(flag, action="store_true")
    args = parser.parse_args()

    if args.dry_run:
        windows = int(os.environ.get("FAKE_GEODIFF_WINDOWS", "4"))
        print(json.dumps({"event": "plan", "width": 157, "height": 159, "resolution_m": 1.0, "crs": "EPSG:32635",
                          "windows": windows, "steps": 20, "device": "cpu", "seconds_estimate": 5.0 * windows}))  # fmt: skip
        return 0

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
        os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
        os.makedirs(os.path.join(args.out, "masks"), exist_ok=True)
        with open(os.path.join(args.out, "manifest.json"), "w") as f:
            json.dump({"format": "geodiff-paired-dataset-1", "n_samples": 0, "samples": []}, f)
        emit(progress=1.0, message="done")
        return 0
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
    else:
        write_tif(args.out, bbox, args.bbox_crs, 1, 0)
    emit(progress=1.0, message="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
