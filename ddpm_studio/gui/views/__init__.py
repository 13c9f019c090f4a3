"""The app's widgets: views only. Each implements a Protocol of ``views/protocols.py`` that its presenter
(``gui/presenters``) drives; a view emits its user's requests as signals and shows what it is told."""
