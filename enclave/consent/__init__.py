"""consent: who may be counted for which purpose (the registry), and the snapshot a query runs with."""
