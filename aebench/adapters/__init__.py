"""Adapters that let aebench score autoencoders it did not train (pythae folders, plain checkpoints)."""
