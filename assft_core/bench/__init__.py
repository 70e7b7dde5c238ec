"""assft_core.bench"""
