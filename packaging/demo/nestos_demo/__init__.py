"""nestos_demo: builds the tiny NestOS-like demo media (metal image, live ISO, PXE, stream)
and the QEMU harness that boots them. Packaging/test tooling, not part of the installer.
"""

VERSION = "0.1"
