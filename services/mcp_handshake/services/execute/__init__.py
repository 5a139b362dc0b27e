"""Execute workers: phase 2, receipts, and the receipt key set."""
