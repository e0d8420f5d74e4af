"""The self-supervised session encoder (PyTorch): model, objectives, training loop."""

from training.encoder.model import EncoderConfig, SessionEncoder

__all__ = ["EncoderConfig", "SessionEncoder"]
