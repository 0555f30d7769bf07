"""The fedledger dashboard: a Streamlit app (``fedledger dashboard``) over the API and the chain.

Data access (:mod:`visualization.data`, :mod:`visualization.governance`) is apart from rendering
(:mod:`visualization.views`, :mod:`visualization.charts`); the wallet is a Streamlit component shipped as
static files (:mod:`visualization.wallet`).
"""
