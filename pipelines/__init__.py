"""DVC stage scripts: one thin module per stage over ``coformer.stages`` (see ``common.py``)."""
