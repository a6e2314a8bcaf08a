"""The demo dataset: drawings of hands in the SIGNS layout, so that the template runs without downloads."""
