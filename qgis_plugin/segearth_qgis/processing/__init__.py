"""Processing provider with the "Segment raster by prompt" algorithm."""
