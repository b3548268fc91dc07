"""The imagery cube: its contract, masking, seasons, composites, indices."""
