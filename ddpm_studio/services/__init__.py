"""Qt-free orchestration shared by the CLI and the GUI: sessions, run control, run folders, metrics."""
