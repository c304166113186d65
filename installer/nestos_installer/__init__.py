"""nestos-installer: install NestOS onto disks and customize NestOS live media."""

__version__ = "0.1.0"
