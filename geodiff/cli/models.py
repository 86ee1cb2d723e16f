"""``geodiff models``: the installed models, with resolution, classes and measured metrics."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
def models(as_json: bool) -> None:
    """List installed models (the user's model folder first, then those shipped with geodiff).

    \b
    Use one with --model NAME; put your own in the user's model folder (shown below) or point
    GEODIFF_MODEL_DIR at a model folder to make it the default.
    """
    from geodiff.models import installed_models, model_search_path, resolve_model

    found = installed_models()
    try:
        default = resolve_model(None).path
    except Exception:  # a broken default must not hide the list
        default = None
    infos = [m.info() | {"default": m.path == default} for m in found]
    if as_json:
        click.echo(
            json.dumps({"models": infos, "search_path": [str(p) for p in model_search_path()]}, indent=2)
        )
        return
    if not infos:
        click.echo("no models installed; looked in " + ", ".join(str(p) for p in model_search_path()))
        return
    for info in infos:
        mark = " (default)" if info["default"] else ""
        click.echo(f"{info['name']}{mark}")
        click.echo(f"  path: {info['path']}")
        click.echo(
            f"  {info['resolution_m']:g} m/px, {info['tile_size']} px windows, {info['conditioning']}, "
            f"guidance {info['guidance_scale']:g}"
        )
        if info.get("qualities"):
            click.echo("  qualities (--quality): " + ", ".join(info["qualities"]))
        if info.get("classes"):
            click.echo("  classes: " + ", ".join(info["classes"]))
        for key, value in (info.get("metrics") or {}).items():
            if key != "command":
                click.echo(f"  {key}: {value}")
    click.echo("search path: " + ", ".join(str(p) for p in model_search_path()))
