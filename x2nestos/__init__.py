"""x2nestos: convert a running yum/apt Linux host to NestOS."""

__version__ = "0.1.0"
