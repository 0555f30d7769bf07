"""The pure round computation: typed round parameters, the server's reference update, DP, rollback, and compute_round."""
