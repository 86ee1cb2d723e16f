"""Training: datasets, TOML configs and the autoencoder / diffusion training loops."""
