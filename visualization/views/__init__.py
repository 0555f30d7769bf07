"""The dashboard's pages; each module has ``render(ctx)`` and reads only through the context."""
