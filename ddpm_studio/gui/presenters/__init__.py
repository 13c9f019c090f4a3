"""One presenter per feature: training, notifications, settings, runs, and the Generate tab's parts (model sources,
sampling jobs, nearest images, saving). Each gets only its own views (typed by the Protocols in
``gui/views/protocols.py``) and services; the composition root (``gui/studio.py``) wires them."""
