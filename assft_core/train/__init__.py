"""assft_core.train"""
