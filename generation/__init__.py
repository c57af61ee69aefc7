"""Prompts to images with diffusers. Importing this package does not import torch."""
