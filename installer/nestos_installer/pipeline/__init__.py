"""Streaming byte pipeline: composable readers, decompression by magic, progress."""
