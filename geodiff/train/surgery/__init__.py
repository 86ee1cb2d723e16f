"""Model surgery: named steps that change a trained model's architecture or weights without (much) training.

Each step is a library function, used by a training stage (:mod:`geodiff.train.stages`) or by a
``geodiff model`` command, never switched by a flag elsewhere:

- :mod:`~geodiff.train.surgery.widen`: double a decoder's width, an exact copy to start with (stage
  ``widen-decoder``);
- :mod:`~geodiff.train.surgery.detail`: add latent channels for detail to an autoencoder and its U-Net (stage
  ``grow-latents``, ``diffusion.autoencoder``);
- :mod:`~geodiff.train.surgery.mix`: mix the decoders of two decoder-only fine-tunes (``geodiff model
  mix-decoders``);
- :mod:`~geodiff.train.surgery.finalize`: swap a decoder into a model, set its guidance, measure it and write its
  card (``geodiff model finalize``).

A new surgery step: a module here with one public function, then either a stage in
:data:`geodiff.train.stages.STAGES` (if it is followed by training) or a command in ``geodiff/cli/model.py``.
"""
