"""cogoctl: a process supervisor for the worker services of an AI-agent backend."""

__version__ = "0.1.0"
