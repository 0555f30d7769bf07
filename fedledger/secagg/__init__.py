"""Secure aggregation within small groups (issue 24): the server learns only each group's sum.

SecAgg+-style pairwise masking (Bonawitz et al. CCS 2017; Bell et al. CCS 2020) run inside groups that a
seed nobody controls alone assigns (:mod:`.groups`). Pure: no database, no network, no clock. Modules:
:mod:`.groups` (assignment), :mod:`.quantize` (float32 into Z_{2^32}), :mod:`.prg` (AES-256-CTR mask
expansion), :mod:`.agreement` (X25519 seeds and share channels), :mod:`.shamir` (t-of-k sharing of 32-byte
seeds over pycryptodome's GF(2^128) Shamir), :mod:`.messages` (the EIP-712 documents of every step),
:mod:`.protocol` (a member's steps and the server's unmasking), :mod:`.wire` (the messages' JSON forms).
"""
