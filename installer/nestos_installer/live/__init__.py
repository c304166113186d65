"""Live ISO and PXE media: ISO9660 lookup, embed areas, initrd cpio, customization."""
