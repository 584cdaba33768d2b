"""Notebook 07, the troubleshooting lab: the failures learners of this workflow hit, reproduced on the CPU.

``common`` holds the exercises, the prediction check and running code in the other course
environment; ``serving`` the prompt, template, image-order and KV-cache problems; ``training``
the checkpoint, truncation, silent-failure and EXIF problems; ``workspace`` what the lab needs built
before it starts.
"""
