"""Plugin core: parameters, the engine client and results. No widgets here."""
