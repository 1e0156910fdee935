"""File-type handlers: each module is its own plugin (``pdf``, ...), so one can be replaced alone."""
