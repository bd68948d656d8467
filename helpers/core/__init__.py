"""The floor every stage stands on: project paths and the class vocabulary (``config``), the error types that
carry a clear message (``errors``), atomic file writes (``atomic``), optional extras (``extras``) and the
provenance recorded with every result (``provenance``). Imports nothing from the other stages."""
