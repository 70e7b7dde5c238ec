"""assft_core.query"""
