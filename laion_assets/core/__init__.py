"""What every stage shares: errors, atomic writes, paths and locations, settings, output layout, hints."""
