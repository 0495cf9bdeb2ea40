"""`make demo`: the whole loop on the simulated shop, then served decisions scored against the ground truth."""
