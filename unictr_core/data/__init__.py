"""Samples, sample files, dataset folders, prompt templates and the built-in dataset."""
