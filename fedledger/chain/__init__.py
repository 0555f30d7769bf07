"""The Python side of the chain: the deployments file, governed parameters, reward Merkle trees, a dev node."""
