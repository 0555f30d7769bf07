"""A Flower app on the digits task whose ServerApp runs fedledger's FedLedgerStrategy."""
