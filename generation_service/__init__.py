"""The generation service: one parameter set in, one stored conversation out."""
