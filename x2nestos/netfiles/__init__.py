"""Readers of the host's network configuration files, one module per format, and the keyfile
writer they share. stdlib only (netplan's PyYAML is imported lazily); nothing here runs commands.
"""
