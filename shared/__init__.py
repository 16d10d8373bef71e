"""What every PickMyClass service shares: wire contracts, settings, logging and clients."""
