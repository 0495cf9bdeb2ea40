"""The Feast feature repository and the pure feature transforms that batch, streaming and serving all call."""
