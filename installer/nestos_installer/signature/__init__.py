"""Detached OpenPGP signatures: the shared trust policy (`policy`), the streaming verifier of
the install and download pipelines (`verifier`, with the `gpg` and `sqv` backends) and the
file verifier x2nestos bundles (`gpgv`). Imports nothing: the x2nestos zipapp loads this file.
"""
