"""assft_core.viz"""
