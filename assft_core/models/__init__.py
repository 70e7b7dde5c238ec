"""assft_core.models"""
