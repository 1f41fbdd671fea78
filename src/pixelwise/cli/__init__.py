"""The command line: argument parsing, exit codes and printing only; the work is the Python API's."""

from .main import main

__all__ = ["main"]
