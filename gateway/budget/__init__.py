"""Money: pricing, budget periods, reservations and the ledger."""
