"""The app's panels: views only; the controllers in ``ddpm_studio.gui`` give them behaviour."""
