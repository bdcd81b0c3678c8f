"""Shim for tools that still call ``setup.py``: the metadata, dependencies, extras and
the ``tf-cme`` command are declared in pyproject.toml (PEP 621)."""
from setuptools import setup

setup()
