"""Built-in careshare plugins: one package per channel, plus the file-type handlers."""
