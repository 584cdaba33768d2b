"""Helpers for the course "InternVL 的部署与微调".

One job per module; heavy libraries (torch, transformers, xtuner, lmdeploy, gradio) are
imported inside the functions that need them, so ``import helpers`` is instant in either
environment.
"""
from helpers.settings import get_settings  # noqa: F401

__version__ = "0.1.0"
