"""Hyperparameter search over either task (the neural LM, the encoder-decoder), by concern:

- ``space``: what a search may vary and how it is written (no Ray);
- ``best``: the search's result put into params, for the train stage (no Ray);
- ``cluster``: a local Ray instance or an existing cluster, and trial resources;
- ``trial``: one trial on a worker, and the check that every sampled value is valid;
- ``search``: the Tune run, its MLflow child runs and the trials table;
- ``plot``: the search's picture.

Importing this package imports no Ray; only ``cluster``, ``trial`` and ``search`` use it.
"""
