"""Notebook 02's pre-training stages in miniature: the base model the course fine-tunes."""
