"""One presenter per feature: training, settings, runs, generate. Each gets only its own views (typed by the
Protocols in ``gui/views/protocols.py``) and services; the composition root (``gui/studio.py``) wires them."""
