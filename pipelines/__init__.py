"""DVC stage scripts: thin layers over the coformer library, one module per stage."""
