"""ckpt-doctor: activation-checkpointing and GPU-memory doctor for training scripts."""

__version__ = "0.1.0"
