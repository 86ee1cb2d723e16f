"""Probe (issue 31): do small houses follow the map better when the map is drawn larger than the model's scale?

The model learnt buildings from Dubai villas (20-30 m); OSM maps of villages draw 5-15 m houses that come out
as one dark smudge. This rasterizes an OSM benchmark area at ``resolution / zoom`` (houses ``zoom`` x larger in
pixels), synthesizes that, shrinks the image back to the model's resolution (box filter) and scores the kept
judge against the area's map at the model's resolution, next to ``zoom`` 1 (the benchmark's own protocol, which
it reproduces). The areas, seeds and noise lattice are those of ``bench/osm_maps.py``.

    python experiments/osm_zoom/probe.py --places bavarian_village,kotka --zooms 1,2 --guidance 2,3 \
        --out bench/results/osm_maps/zoom_probe.jsonl

One JSON line per (area, zoom, guidance); a picture per line beside ``--out`` when ``--pictures`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "geodiff" / "data" / "models" / "geodiff-default"))
    ap.add_argument("--places", default="bavarian_village")
    ap.add_argument("--zooms", default="1,2", help="integer zooms")
    ap.add_argument("--guidance", default="2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pictures", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import osm_maps as om
    import torch
    from affine import Affine
    from PIL import Image

    from geodiff.evaluate.segmentation import iou_scores, load_segnet, predict
    from geodiff.grid import BBox, Grid
    from geodiff.models import resolve_model
    from geodiff.osm import load_features
    from geodiff.rasterize import rasterize_features
    from geodiff.settings import get_settings
    from geodiff.synth import synthesize_map

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model).load("cpu")
    net = load_segnet(om.JUDGE)
    res, tile = model.config.resolution_m, model.config.tile_size
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for place in args.places.split(","):
        file, extent = om.PLACES[place]
        cmap, grid = om.place_map(place, res, None)
        feats = load_features(
            BBox(*extent), osm_path=om.OSM / file, allow_empty=True, settings=get_settings()
        )
        for a in om.pick_areas(place, cmap, grid, tile):
            window = grid.window(a.row, a.col, *a.class_map.shape)
            for z in (int(v) for v in args.zooms.split(",")):
                # the same ground, z x the pixels: houses z x larger than the model's scale draws them
                zgrid = Grid(
                    grid.crs, window.transform * Affine.scale(1 / z), window.width * z, window.height * z
                )
                zmap = a.class_map if z == 1 else rasterize_features(feats, zgrid)
                for g in (float(v) for v in args.guidance.split(",")):
                    t0 = time.time()
                    img = synthesize_map(zmap, model, seed=args.seed, guidance_scale=g, device="cpu",
                                         origin=(a.origin[0] * z, a.origin[1] * z), place=a.noise_key)  # fmt: skip
                    if z != 1:
                        size = a.class_map.shape[::-1]
                        img = np.array(Image.fromarray(img).resize(size, Image.Resampling.BOX))
                    pred = predict(net, img[None])[0]
                    s = iou_scores(pred, a.class_map)
                    rec = {"area": a.name, "place": place, "zoom": z, "guidance": g, "seed": args.seed,
                           "miou": s["miou"], "per_class": s["per_class"], "seconds": round(time.time() - t0, 1)}  # fmt: skip
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    print(f"{a.name} zoom {z} guidance {g:g}: mIoU {s['miou']:.3f}", flush=True)
                    if args.pictures:
                        name = f"{args.out.stem}_{a.name}_z{z}_g{g:g}.jpg"
                        Image.fromarray(img).save(args.out.with_name(name), quality=85)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
