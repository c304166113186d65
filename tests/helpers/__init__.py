"""Test helpers: real local servers, real gpg keys, loop devices, capability probes."""
