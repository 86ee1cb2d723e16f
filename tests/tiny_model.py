"""The tiny, randomly initialised models of the tests (and of .ci/run's QGIS tests: ``python tests/tiny_model.py DIR``).

One factory, two sizes: ``TINY`` (32 px windows at the default resolution) for unit tests of the model and
training, and ``END_TO_END`` on top of it (64 px windows at 2 m/px) for fast synthesis runs over the tiny town.
"""

from __future__ import annotations

from pathlib import Path

import torch

from geodiff.model import GeodiffModel, ModelConfig, build_autoencoder

TINY = dict(
    tile_size=32,
    vae_block_channels=[8, 8, 8],
    vae_norm_groups=4,
    latent_channels=4,
    unet_block_channels=[8, 16],
    unet_attention_levels=[False, True],
    unet_norm_groups=4,
    attention_head_dim=4,
    map_encoder_channels=[8, 8],
    map_cond_channels=4,
    context_dim=8,
    context_pool=2,
    storage_dtype="float32",
)
END_TO_END = dict(resolution_m=2.0, tile_size=64, attention_head_dim=8)

# the TINY model as a training config (data and run folders filled in by write_config)
TINY_TOML = """
[data]
path = "{data}"
crop = 32
[model]
tile_size = 64
vae_block_channels = [8, 8, 8]
vae_norm_groups = 4
unet_block_channels = [8, 16]
unet_attention_levels = [false, true]
unet_norm_groups = 4
attention_head_dim = 4
map_encoder_channels = [8, 8]
map_cond_channels = 4
context_dim = 8
storage_dtype = "float32"
[autoencoder]
steps = 4
batch_size = 2
eval_tiles = 2
[diffusion]
steps = 4
batch_size = 2
[run]
dir = "{run}"
threads = 1
log_every = 1
checkpoint_every = 2
"""


def build_tiny_model(seed: int = 0, *, end_to_end: bool = True, **overrides: object) -> GeodiffModel:
    """The tiny model in memory, in eval mode: ``TINY`` (+ ``END_TO_END``) with ``overrides``."""
    torch.manual_seed(seed)
    return GeodiffModel(ModelConfig(**{**TINY, **(END_TO_END if end_to_end else {}), **overrides})).eval()


def make_tiny_model(path: Path, seed: int = 0, **overrides: object) -> Path:
    """The end-to-end tiny model saved as a model folder at ``path``."""
    build_tiny_model(seed, **overrides).save_pretrained(path)
    return path


def add_tiny_student(path: Path, steps: int = 2) -> Path:
    """Give the model folder ``path`` a distilled fast sampler (``student/``, ``quality="fast"``) whose guidance
    embedding matters (random, not the zero a fresh student starts with); returns ``path``."""
    from geodiff.model.student import StudentInfo, make_student_unet, save_student

    teacher = GeodiffModel.from_pretrained(path)
    student = make_student_unet(teacher.unet, 8)
    torch.manual_seed(1)
    torch.nn.init.normal_(student.time_embedding.cond_proj.weight, std=0.5)
    save_student(
        path, student, teacher.scheduler_config, StudentInfo(steps=steps, teacher="tiny"), half=False
    )
    return path


def trained_looking_vae(seed: int = 0):
    """The TINY KL autoencoder with its norms and biases moved off their defaults (as training does), so a
    copy that ignored them, or mixed GroupNorm groups, would decode differently."""
    torch.manual_seed(seed)
    vae = build_autoencoder(ModelConfig(**TINY))
    with torch.no_grad():
        for p in vae.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.3)
    return vae.eval()


def class_map(b: int = 2, size: int = 32) -> torch.Tensor:
    """A random class map batch ``[b, size, size]`` with a corner of ignore pixels (255)."""
    g = torch.Generator().manual_seed(1)
    m = torch.randint(0, 5, (b, size, size), generator=g)
    m[:, :4, :4] = 255  # ignore pixels must be accepted
    return m


def write_config(tmp_path: Path, dataset: Path, extra: str = "") -> Path:
    """A training config of the TINY model on ``dataset``, running in ``tmp_path/run``."""
    path = tmp_path / "c.toml"
    path.write_text(TINY_TOML.format(data=dataset, run=tmp_path / "run") + extra)
    return path


if __name__ == "__main__":  # used by .ci/run to give the QGIS end-to-end tests a model
    import sys

    print(make_tiny_model(Path(sys.argv[1])))
